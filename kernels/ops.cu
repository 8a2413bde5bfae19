// CUDA kernels for lightunet's custom ops (src/model/ops/): the grouped/depthwise 3x3
// convolution (forward, weight gradient), bias + ReLU, and the adjoint of bilinear x2 upsampling.
// Compiled to PTX by build.rs with the CUDA 13.0 nvcc of scripts/cuda-env.sh. All tensors are
// contiguous NCHW. Accumulation is always in f32, also for f16/bf16 storage.
// kernels/host/check.cpp compiles this file for the CPU too (LIGHTUNET_HOST: f32 only, each block
// run by real threads), so that the tests check the kernels' logic on machines without a GPU.
#ifndef LIGHTUNET_HOST
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define HALF_TYPES 1
#endif
#include <stdint.h>

__device__ __forceinline__ float to_f(float v) { return v; }
#ifdef HALF_TYPES
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
#endif
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
#ifdef HALF_TYPES
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
#endif

// Output index i of [P, oh, ow] -> its plane, row and column.
__device__ __forceinline__ size_t unravel(size_t i, int oh, int ow, int* oy, int* ox) {
  *ox = i % ow;
  const size_t t = i / ow;
  *oy = t % oh;
  return t / oh;
}

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
#ifdef HALF_TYPES
GCONV(gconv3x3_f16, __half)
GCONV(gconv3x3_bf16, __nv_bfloat16)
#endif

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
#ifdef HALF_TYPES
BIAS_ACT(bias_act_f16, __half)
BIAS_ACT(bias_act_bf16, __nv_bfloat16)
#endif

__device__ __forceinline__ void ac_taps(int i, int n, int* i0, int* i1, float* f) {
  if (n == 1) { *i0 = 0; *i1 = 0; *f = 0.f; return; }
  float pos = (float)i * (float)(n - 1) / (float)(2 * n - 1);
  int a = min((int)floorf(pos), n - 1);
  *i0 = a; *i1 = min(a + 1, n - 1); *f = pos - (float)a;
}

// Bilinear x2 upsampling with align_corners: x [P, h, w] -> y [P, 2h, 2w], the taps of ac_taps
// (candle's kernel computes each output's position in double, with 64-bit divisions).
template <typename T>
__device__ void upsample2x(const T* __restrict__ x, T* __restrict__ y, size_t planes, int h, int w) {
  const int oh = 2 * h, ow = 2 * w;
  const size_t total = planes * oh * ow;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    int ox, oy;
    const size_t p = unravel(i, oh, ow, &oy, &ox);
    int y0, y1, x0, x1;
    float fy, fx;
    ac_taps(oy, h, &y0, &y1, &fy);
    ac_taps(ox, w, &x0, &x1, &fx);
    const T* s = x + p * h * w;
    // The CPU op's order of operations (src/model/ops/upsample.rs `Upsample2x`).
    const float a = to_f(s[y0 * w + x0]), b = to_f(s[y0 * w + x1]);
    const float c = to_f(s[y1 * w + x0]), d = to_f(s[y1 * w + x1]);
    const float top = a + (b - a) * fx, bot = c + (d - c) * fx;
    y[i] = from_f<T>(top + (bot - top) * fy);
  }
}
#define UPSAMPLE(NAME, T) \
  extern "C" __global__ void NAME(const T* x, T* y, size_t planes, int h, int w) { upsample2x<T>(x, y, planes, h, w); }
UPSAMPLE(upsample2x_f32, float)
#ifdef HALF_TYPES
UPSAMPLE(upsample2x_f16, __half)
UPSAMPLE(upsample2x_bf16, __nv_bfloat16)
#endif

// Adjoint of bilinear x2 (align_corners) upsampling: g [P, 2h, 2w] -> gx [P, h, w] (zeroed).
extern "C" __global__ void upsample2x_bwd_f32(const float* __restrict__ g, float* __restrict__ gx,
                                              size_t planes, int h, int w) {
  const int oh = 2 * h, ow = 2 * w;
  size_t total = planes * oh * ow;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    int ox, oy;
    const size_t p = unravel(i, oh, ow, &oy, &ox);
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

// ---------------------------------------------------------------------------------------------
// Training BatchNorm (+ the convolution's bias + ReLU) and per-channel sums, f32, as the CPU ops
// of src/model/ops/batchnorm.rs compute them. x is [N, C, HW]. The per-channel reductions run on a
// grid (Q*N, C): block (n*Q + q, c) sums its span of plane (n, c) into partial[c * Q*N + n*Q + q]
// (double, two values per entry), and a finalize kernel (one thread per channel) adds a
// channel's partials in order, so the result does not depend on the order blocks ran in.
// saved ([6, C], written by bn_finalize): mean (of x, without the bias), var, invstd, gamma,
// scale = gamma * invstd, beta.

#define RED_THREADS 256

// Block-wide sum of two doubles; thread 0 gets the totals.
__device__ __forceinline__ void block_sum2(double a, double b, double* oa, double* ob) {
  __shared__ double sa[RED_THREADS], sb[RED_THREADS];
  sa[threadIdx.x] = a;
  sb[threadIdx.x] = b;
  __syncthreads();
  for (int s = RED_THREADS / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      sa[threadIdx.x] += sa[threadIdx.x + s];
      sb[threadIdx.x] += sb[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) { *oa = sa[0]; *ob = sb[0]; }
}

// Block (x, c)'s two sums into its slot of partial (channel-major, gridDim.x slots a channel).
__device__ __forceinline__ void store_partial(float a, float b, double* partial) {
  double ta, tb;
  block_sum2(a, b, &ta, &tb);
  if (threadIdx.x == 0) {
    double* o = partial + 2 * ((size_t)blockIdx.y * gridDim.x + blockIdx.x);
    o[0] = ta;
    o[1] = tb;
  }
}

// The span of plane (n, c) that block (n*Q + q, c) covers: [*p0, *p1) within the plane, and the
// plane's offset.
__device__ __forceinline__ size_t span_of(int C, size_t hw, int Q, size_t* p0, size_t* p1) {
  const int n = blockIdx.x / Q, q = blockIdx.x % Q, c = blockIdx.y;
  const size_t len = (hw + Q - 1) / Q;
  *p0 = min(hw, (size_t)q * len);
  *p1 = min(hw, *p0 + len);
  return ((size_t)n * C + c) * hw;
}

// (sum(v - k), sum((v - k)^2)) per block; k = the channel's first value when shift, else 0 (the
// shift keeps the one-pass variance from cancelling when the mean is large against the spread).
extern "C" __global__ void bn_sums_f32(const float* __restrict__ x, double* __restrict__ partial, int C,
                                       size_t hw, int Q, int shift) {
  size_t p0, p1;
  const float* src = x + span_of(C, hw, Q, &p0, &p1);
  const float k = shift ? x[(size_t)blockIdx.y * hw] : 0.f;
  float a = 0.f, b = 0.f;
  for (size_t p = p0 + threadIdx.x; p < p1; p += RED_THREADS) {
    float d = src[p] - k;
    a += d;
    b += d * d;
  }
  store_partial(a, b, partial);
}

// Channel c's partial sums, added in block order.
__device__ __forceinline__ void partial_totals(const double* partial, int c, int P, double* a, double* b) {
  double s1 = 0.0, s2 = 0.0;
  for (int i = 0; i < P; ++i) {
    s1 += partial[2 * ((size_t)c * P + i)];
    s2 += partial[2 * ((size_t)c * P + i) + 1];
  }
  *a = s1;
  *b = s2;
}

// Per-channel sums (a convolution's bias gradient): out[c] = sum of channel c.
extern "C" __global__ void channel_sums_finalize(const double* __restrict__ partial, float* __restrict__ out,
                                                 int C, int P) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double a, b;
  partial_totals(partial, c, P, &a, &b);
  out[c] = (float)a;
}

// Statistics from the shifted sums; params is [3, C]: bias, gamma, beta. M = N * HW.
extern "C" __global__ void bn_finalize(const double* __restrict__ partial, const float* __restrict__ x,
                                       const float* __restrict__ params, float* __restrict__ saved, int C,
                                       int P, size_t hw, double M, double eps) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double s1, s2;
  partial_totals(partial, c, P, &s1, &s2);
  const double k = x[(size_t)c * hw];
  const double d = s1 / M;
  const double var = fmax(s2 / M - d * d, 0.0);
  const double invstd = 1.0 / sqrt(var + eps);
  const float gamma = params[C + c];
  saved[c] = (float)(k + d);
  saved[C + c] = (float)var;
  saved[2 * C + c] = (float)invstd;
  saved[3 * C + c] = gamma;
  saved[4 * C + c] = gamma * (float)invstd;
  saved[5 * C + c] = params[2 * C + c];
}

// y = relu?((x - mean) * scale + beta), centred first so that a channel with no spread gives beta.
extern "C" __global__ void bn_apply_f32(const float* __restrict__ x, const float* __restrict__ saved,
                                        float* __restrict__ y, size_t total, int C, size_t hw, int relu) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int c = (i / hw) % C;
    float v = (x[i] - saved[c]) * saved[4 * C + c] + saved[5 * C + c];
    y[i] = relu ? fmaxf(v, 0.f) : v;
  }
}

// The incoming gradient through the ReLU: zero where the value before the ReLU was not positive.
__device__ __forceinline__ float through_relu(float g, float xc, float scale, float beta, int relu) {
  return (relu && xc * scale + beta <= 0.f) ? 0.f : g;
}

// (sum(g'), sum(g' * (x - mean))) per block, g' the gradient through the ReLU.
extern "C" __global__ void bn_bwd_sums_f32(const float* __restrict__ x, const float* __restrict__ g,
                                           const float* __restrict__ saved, double* __restrict__ partial, int C,
                                           size_t hw, int Q, int relu) {
  size_t p0, p1;
  const size_t off = span_of(C, hw, Q, &p0, &p1);
  const int c = blockIdx.y;
  const float mean = saved[c], scale = saved[4 * C + c], beta = saved[5 * C + c];
  float a = 0.f, b = 0.f;
  for (size_t p = p0 + threadIdx.x; p < p1; p += RED_THREADS) {
    float xc = x[off + p] - mean;
    float gg = through_relu(g[off + p], xc, scale, beta, relu);
    a += gg;
    b += gg * xc;
  }
  store_partial(a, b, partial);
}

// dbeta = sum g', dgamma = invstd * sum g' (x - mean), and the constants of
// dx = a g' + b (x - mean) + c0 into coef [3, C]; dparams [3, C] gets dgamma and dbeta, and its
// bias row zeros for bn_bwd_dx to add into.
extern "C" __global__ void bn_bwd_finalize(const double* __restrict__ partial, const float* __restrict__ saved,
                                           float* __restrict__ coef, float* __restrict__ dparams, int C, int P,
                                           double M) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double dbeta, sxc;
  partial_totals(partial, c, P, &dbeta, &sxc);
  const double invstd = saved[2 * C + c], gamma = saved[3 * C + c];
  const double dgamma = sxc * invstd;
  const double a = gamma * invstd;
  coef[c] = (float)a;
  coef[C + c] = (float)(-a * invstd * dgamma / M);
  coef[2 * C + c] = (float)(-a * dbeta / M);
  dparams[c] = 0.f;
  dparams[C + c] = (float)dgamma;
  dparams[2 * C + c] = (float)dbeta;
}

// The input gradient, and its per-channel sum (the bias gradient) added into dparams[c].
extern "C" __global__ void bn_bwd_dx_f32(const float* __restrict__ x, const float* __restrict__ g,
                                         const float* __restrict__ saved, const float* __restrict__ coef,
                                         float* __restrict__ dx, float* __restrict__ dparams, int C, size_t hw,
                                         int Q, int relu) {
  size_t p0, p1;
  const size_t off = span_of(C, hw, Q, &p0, &p1);
  const int c = blockIdx.y;
  const float mean = saved[c], scale = saved[4 * C + c], beta = saved[5 * C + c];
  const float a = coef[c], b = coef[C + c], c0 = coef[2 * C + c];
  float acc = 0.f;
  for (size_t p = p0 + threadIdx.x; p < p1; p += RED_THREADS) {
    float xc = x[off + p] - mean;
    float v = a * through_relu(g[off + p], xc, scale, beta, relu) + b * xc + c0;
    dx[off + p] = v;
    acc += v;
  }
  double t, unused;
  block_sum2(acc, 0.0, &t, &unused);
  if (threadIdx.x == 0) atomicAdd(&dparams[c], (float)t);
}

// ---------------------------------------------------------------------------------------------
// 2x2 max-pooling of the training graph, f32 (src/model/ops/maxpool.rs): floor for odd sizes;
// a window's gradient goes to its first maximum in row-major order (PyTorch's rule; NaN never
// wins a comparison). One thread per output. P = N * C planes.

template <typename T>
__device__ __forceinline__ size_t window_argmax(const T* plane, int w, int oy, int ox, float* best) {
  const size_t i0 = (size_t)(2 * oy) * w + 2 * ox;
  const size_t cand[4] = {i0, i0 + 1, i0 + w, i0 + w + 1};
  size_t arg = cand[0];
  float v = to_f(plane[arg]);
#pragma unroll
  for (int t = 1; t < 4; ++t) {
    float u = to_f(plane[cand[t]]);
    if (u > v) { v = u; arg = cand[t]; }
  }
  *best = v;
  return arg;
}

// Also the inference pooling for every dtype: candle's max reductions over pairs (the
// composition's way) launch one two-thread block per output pair.
template <typename T>
__device__ void maxpool2x2(const T* __restrict__ x, T* __restrict__ y, size_t planes, int h, int w) {
  const int oh = h / 2, ow = w / 2;
  const size_t total = planes * oh * ow;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    int ox, oy;
    const size_t p = unravel(i, oh, ow, &oy, &ox);
    float v;
    window_argmax(x + p * h * w, w, oy, ox, &v);
    y[i] = from_f<T>(v);
  }
}
#define MAXPOOL(NAME, T) \
  extern "C" __global__ void NAME(const T* x, T* y, size_t planes, int h, int w) { maxpool2x2<T>(x, y, planes, h, w); }
MAXPOOL(maxpool2x2_f32, float)
#ifdef HALF_TYPES
MAXPOOL(maxpool2x2_f16, __half)
MAXPOOL(maxpool2x2_bf16, __nv_bfloat16)
#endif

// gx (zeroed) [P, h, w]: each window's gradient to its first maximum. Windows do not overlap.
extern "C" __global__ void maxpool2x2_bwd_f32(const float* __restrict__ x, const float* __restrict__ g,
                                              float* __restrict__ gx, size_t planes, int h, int w) {
  const int oh = h / 2, ow = w / 2;
  const size_t total = planes * oh * ow;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    int ox, oy;
    const size_t p = unravel(i, oh, ow, &oy, &ox);
    float v;
    size_t at = window_argmax(x + p * h * w, w, oy, ox, &v);
    gx[p * h * w + at] = g[i];
  }
}

// ---------------------------------------------------------------------------------------------
// A whole separable conv set of inference in one pass (opt-in, LIGHTUNET_CUDA_FUSED=1, until a
// GPU run has checked and timed it): the grouped 3x3 (K input channels per group; BatchNorm
// folded) into shared memory, then the pointwise 1x1 over it, its bias and the ReLU, so the
// grouped conv's output never goes to global memory and three kernels become one.
//   y[n, o, p] = relu?(pb[o] + sum_c pw[o, c] * (gb[c] + sum_{j<K, 3x3} gw[c, j] * x[n, (c/K)*K + j, p + tap]))
// grid: (tiles of SEP_TW x SEP_TH pixels, ceil(CO / SEP_CO), N), block: 256. Each thread keeps
// 4 outputs x 4 pixels; pixels pg, pg + 16, pg + 32, pg + 48 of the tile (one per tile row),
// so that a half-warp stores 16 consecutive pixels.
#define SEP_TW 16
#define SEP_TH 4
#define SEP_PX (SEP_TW * SEP_TH)
#define SEP_CO 64
#define SEP_CI 32

template <typename T>
__device__ void sep_conv_fused(const T* __restrict__ x, const T* __restrict__ gw, const T* __restrict__ gb,
                               const T* __restrict__ pw, const T* __restrict__ pb, T* __restrict__ y, int CI,
                               int CO, int H, int W, int K, int relu) {
  __shared__ __align__(16) float sg[SEP_CI][SEP_PX];  // grouped conv outputs: [channel][pixel]
  __shared__ __align__(16) float sw[SEP_CI][SEP_CO];  // pointwise weights: [channel][output]
  const int tiles_x = (W + SEP_TW - 1) / SEP_TW;
  const int tx0 = (blockIdx.x % tiles_x) * SEP_TW, ty0 = (blockIdx.x / tiles_x) * SEP_TH;
  const int co0 = blockIdx.y * SEP_CO;
  const int n = blockIdx.z;
  const int t = threadIdx.x;
  const int og = t / 16, pg = t % 16;
  const size_t plane = (size_t)H * W;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  for (int c0 = 0; c0 < CI; c0 += SEP_CI) {
    for (int i = t; i < SEP_CI * SEP_PX; i += blockDim.x) {
      const int cl = i / SEP_PX, p = i % SEP_PX;
      const int c = c0 + cl;
      const int py = ty0 + p / SEP_TW, px = tx0 + p % SEP_TW;
      float v = 0.f;
      if (c < CI && py < H && px < W) {
        v = to_f(gb[c]);
        const int g = c / K;
        for (int j = 0; j < K; ++j) {
          const T* src = x + ((size_t)n * CI + (size_t)g * K + j) * plane;
          const T* wt = gw + ((size_t)c * K + j) * 9;
#pragma unroll
          for (int dy = 0; dy < 3; ++dy) {
            const int sy = py + dy - 1;
            if (sy < 0 || sy >= H) continue;
#pragma unroll
            for (int dx = 0; dx < 3; ++dx) {
              const int sx = px + dx - 1;
              if (sx >= 0 && sx < W) v += to_f(wt[dy * 3 + dx]) * to_f(src[(size_t)sy * W + sx]);
            }
          }
        }
      }
      sg[cl][p] = v;
    }
    // pw is [CO, CI]: consecutive threads read consecutive input channels of one output.
    for (int i = t; i < SEP_CI * SEP_CO; i += blockDim.x) {
      const int ol = i / SEP_CI, cl = i % SEP_CI;
      const int c = c0 + cl, o = co0 + ol;
      sw[cl][ol] = (c < CI && o < CO) ? to_f(pw[(size_t)o * CI + c]) : 0.f;
    }
    __syncthreads();
    const int cn = min(SEP_CI, CI - c0);
    for (int cl = 0; cl < cn; ++cl) {
      const float4 a = *reinterpret_cast<const float4*>(&sw[cl][og * 4]);
      const float b[4] = {sg[cl][pg], sg[cl][pg + 16], sg[cl][pg + 32], sg[cl][pg + 48]};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        acc[0][j] += a.x * b[j];
        acc[1][j] += a.y * b[j];
        acc[2][j] += a.z * b[j];
        acc[3][j] += a.w * b[j];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int o = co0 + og * 4 + i;
    if (o >= CO) continue;
    const float bias = to_f(pb[o]);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int p = pg + 16 * j;
      const int py = ty0 + p / SEP_TW, px = tx0 + p % SEP_TW;
      if (py < H && px < W) {
        float v = acc[i][j] + bias;
        if (relu) v = fmaxf(v, 0.f);
        y[((size_t)n * CO + o) * plane + (size_t)py * W + px] = from_f<T>(v);
      }
    }
  }
}

#define SEP_FUSED(NAME, T)                                                                              \
  extern "C" __global__ void NAME(const T* x, const T* gw, const T* gb, const T* pw, const T* pb, T* y,  \
                                  int CI, int CO, int H, int W, int K, int relu) {                      \
    sep_conv_fused<T>(x, gw, gb, pw, pb, y, CI, CO, H, W, K, relu);                                      \
  }
SEP_FUSED(sep_conv_fused_f32, float)
#ifdef HALF_TYPES
SEP_FUSED(sep_conv_fused_f16, __half)
SEP_FUSED(sep_conv_fused_bf16, __nv_bfloat16)
#endif
