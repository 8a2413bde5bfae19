// CUDA kernels for lightunet's custom ops (src/model/ops.rs): the grouped/depthwise 3x3
// convolution (forward, weight gradient), bias + ReLU, and the adjoint of bilinear x2 upsampling.
// Compiled to PTX by build.rs with the CUDA 13.0 nvcc of scripts/cuda-env.sh. All tensors are
// contiguous NCHW. Accumulation is always in f32, also for f16/bf16 storage.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// Tile of outputs computed by one block: the input tile plus a 1-pixel halo goes through shared
// memory, so each input value is read from global memory once instead of nine times.
#define TW 32
#define TH 8

// y[n,o,:,:] = b[o] + sum_{j<K} conv3x3(x[n, (o/K)*K + j], w[o, j])
// grid: (ceil(W/TW), ceil(H/TH), N*C), block: (TW, TH)
template <typename T>
__device__ void gconv3x3(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                         T* __restrict__ y, int C, int H, int W, int K, int has_bias) {
  __shared__ float tile[TH + 2][TW + 2];
  const int nc = blockIdx.z;
  const int o = nc % C;
  const int n = nc / C;
  const int g = o / K;
  const int x0 = blockIdx.x * TW, y0 = blockIdx.y * TH;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int ox = x0 + tx, oy = y0 + ty;
  const size_t plane = (size_t)H * W;
  float acc = has_bias ? to_f(b[o]) : 0.f;
  for (int j = 0; j < K; ++j) {
    const T* src = x + ((size_t)n * C + (size_t)g * K + j) * plane;
    for (int i = ty * TW + tx; i < (TH + 2) * (TW + 2); i += TW * TH) {
      int ly = i / (TW + 2), lx = i % (TW + 2);
      int sy = y0 + ly - 1, sx = x0 + lx - 1;
      tile[ly][lx] = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? to_f(src[(size_t)sy * W + sx]) : 0.f;
    }
    __syncthreads();
    const T* wt = w + ((size_t)o * K + j) * 9;
#pragma unroll
    for (int dy = 0; dy < 3; ++dy)
#pragma unroll
      for (int dx = 0; dx < 3; ++dx) acc += to_f(wt[dy * 3 + dx]) * tile[ty + dy][tx + dx];
    __syncthreads();
  }
  if (ox < W && oy < H) y[(size_t)nc * plane + (size_t)oy * W + ox] = from_f<T>(acc);
}

#define GCONV(NAME, T)                                                                        \
  extern "C" __global__ void NAME(const T* x, const T* w, const T* b, T* y, int C, int H, int W, \
                                  int K, int has_bias) {                                      \
    gconv3x3<T>(x, w, b, y, C, H, W, K, has_bias);                                            \
  }
GCONV(gconv3x3_f32, float)
GCONV(gconv3x3_f16, __half)
GCONV(gconv3x3_bf16, __nv_bfloat16)

// gw[o, j, :, :] += sum over a slice of (n, y, x) of gy[n,o,y,x] * x[n, ic, y+dy-1, x+dx-1]
// grid: (C*K, splits), block: 256. gw must be zeroed; blocks of one (o, j) add atomically.
extern "C" __global__ void gconv3x3_grad_w_f32(const float* __restrict__ gy, const float* __restrict__ x,
                                               float* __restrict__ gw, int N, int C, int H, int W, int K) {
  __shared__ float red[9][256];
  const int oj = blockIdx.x;
  const int o = oj / K, j = oj % K;
  const int ic = (o / K) * K + j;
  const size_t plane = (size_t)H * W;
  const size_t total = (size_t)N * plane;
  float acc[9];
#pragma unroll
  for (int t = 0; t < 9; ++t) acc[t] = 0.f;
  for (size_t i = (size_t)blockIdx.y * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.y * blockDim.x) {
    size_t n = i / plane, p = i % plane;
    int yy = p / W, xx = p % W;
    float g = gy[(n * C + o) * plane + p];
    const float* src = x + (n * C + ic) * plane;
#pragma unroll
    for (int dy = 0; dy < 3; ++dy) {
      int sy = yy + dy - 1;
      if (sy < 0 || sy >= H) continue;
#pragma unroll
      for (int dx = 0; dx < 3; ++dx) {
        int sx = xx + dx - 1;
        if (sx >= 0 && sx < W) acc[dy * 3 + dx] += g * src[(size_t)sy * W + sx];
      }
    }
  }
#pragma unroll
  for (int t = 0; t < 9; ++t) red[t][threadIdx.x] = acc[t];
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s)
#pragma unroll
      for (int t = 0; t < 9; ++t) red[t][threadIdx.x] += red[t][threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x < 9) atomicAdd(&gw[(size_t)oj * 9 + threadIdx.x], red[threadIdx.x][0]);
}

// y = x + b[c], then max(y, 0) when relu; x is [N, C, HW].
template <typename T>
__device__ void bias_act(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y, size_t total,
                         int C, size_t plane, int relu) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    float v = to_f(x[i]) + to_f(b[(i / plane) % C]);
    y[i] = from_f<T>(relu ? fmaxf(v, 0.f) : v);
  }
}
#define BIAS_ACT(NAME, T)                                                                                  \
  extern "C" __global__ void NAME(const T* x, const T* b, T* y, size_t total, int C, size_t plane, int relu) { \
    bias_act<T>(x, b, y, total, C, plane, relu);                                                            \
  }
BIAS_ACT(bias_act_f32, float)
BIAS_ACT(bias_act_f16, __half)
BIAS_ACT(bias_act_bf16, __nv_bfloat16)

__device__ __forceinline__ void ac_taps(int i, int n, int* i0, int* i1, float* f) {
  if (n == 1) { *i0 = 0; *i1 = 0; *f = 0.f; return; }
  float pos = (float)i * (float)(n - 1) / (float)(2 * n - 1);
  int a = min((int)floorf(pos), n - 1);
  *i0 = a; *i1 = min(a + 1, n - 1); *f = pos - (float)a;
}

// Adjoint of bilinear x2 (align_corners) upsampling: g [P, 2h, 2w] -> gx [P, h, w] (zeroed).
extern "C" __global__ void upsample2x_bwd_f32(const float* __restrict__ g, float* __restrict__ gx,
                                              size_t planes, int h, int w) {
  const int oh = 2 * h, ow = 2 * w;
  size_t total = planes * oh * ow;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    int ox = i % ow; size_t t = i / ow; int oy = t % oh; size_t p = t / oh;
    int y0, y1, x0, x1; float fy, fx;
    ac_taps(oy, h, &y0, &y1, &fy);
    ac_taps(ox, w, &x0, &x1, &fx);
    float v = g[i];
    float* d = gx + p * h * w;
    atomicAdd(&d[y0 * w + x0], v * (1.f - fy) * (1.f - fx));
    atomicAdd(&d[y0 * w + x1], v * (1.f - fy) * fx);
    atomicAdd(&d[y1 * w + x0], v * fy * (1.f - fx));
    atomicAdd(&d[y1 * w + x1], v * fy * fx);
  }
}
