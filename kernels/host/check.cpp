// Runs the f32 kernels of kernels/ops.cu on the CPU (shim.h) with the launch geometry of
// src/model/ops/cuda.rs and compares them with plain loops in double: the kernels' indexing,
// reductions, barriers and edge handling, checked without a GPU (tests/cuda_kernels_on_cpu.rs
// builds and runs this). Timing and the f16/bf16 variants still need the device check.
// Exit status 0 when every case passes; one line per case.
#define LIGHTUNET_HOST 1
#include "shim.h"
#include "../ops.cu"

#include <cstdio>
#include <random>
#include <string>

namespace {

int failures = 0;

void report(const std::string& what, double diff, double bound) {
  const bool ok = diff <= bound;
  std::printf("%-60s max diff %.3e (bound %.1e) %s\n", what.c_str(), diff, bound, ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

// max |a - b| / max(max |b|, 1e-6)
double rel(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0, s = 1e-6;
  for (size_t i = 0; i < b.size(); ++i) {
    m = std::max(m, std::fabs(a[i] - b[i]));
    s = std::max(s, std::fabs(b[i]));
  }
  return m / s;
}

std::vector<float> randn(std::mt19937& rng, size_t n, float sd = 1.f, float mean = 0.f) {
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

dim3 grid1(size_t total) { return {unsigned(std::clamp<size_t>((total + 255) / 256, 1, 8)), 1, 1}; }

// src/model/ops/cuda.rs `Reduce`.
struct Reduce {
  int n, c, q;
  size_t hw;
  Reduce(int n_, int c_, size_t hw_) : n(n_), c(c_), q(int(std::clamp<size_t>((hw_ + 4095) / 4096, 1, 64))), hw(hw_) {}
  int partials() const { return q * n; }
  dim3 grid() const { return {unsigned(partials()), unsigned(c), 1}; }
  dim3 per_channel() const { return {unsigned((c + 127) / 128), 1, 1}; }
};

void check_batch_norm(std::mt19937& rng, int n, int c, int h, int w, bool relu) {
  const size_t hw = size_t(h) * w, total = size_t(n) * c * hw;
  const double M = double(n) * hw, eps = 1e-5;
  std::vector<float> x = randn(rng, total, 2.f), g = randn(rng, total);
  for (size_t i = 0; i < total; ++i) x[i] += 3.f * float((i / hw) % c) - 4.f;  // channel offsets
  std::vector<float> params = randn(rng, 3 * c);
  for (int k = 0; k < c; ++k) params[c + k] = 0.5f + std::fabs(params[c + k]);  // gamma > 0
  const Reduce r(n, c, hw);
  std::vector<double> partial(2 * size_t(c) * r.partials());
  std::vector<float> saved(6 * c), y(total), coef(3 * c), dparams(3 * c), dx(total);
  const int C = c, Q = r.q, P = r.partials(), R = relu;
  const size_t HW = hw, TOTAL = total;
  launch(r.grid(), {256, 1, 1}, [&] { bn_sums_f32(x.data(), partial.data(), C, HW, Q, 1); });
  launch(r.per_channel(), {128, 1, 1}, [&] { bn_finalize(partial.data(), x.data(), params.data(), saved.data(), C, P, HW, M, eps); });
  launch(grid1(total), {256, 1, 1}, [&] { bn_apply_f32(x.data(), saved.data(), y.data(), TOTAL, C, HW, R); });
  launch(r.grid(), {256, 1, 1}, [&] { bn_bwd_sums_f32(x.data(), g.data(), saved.data(), partial.data(), C, HW, Q, R); });
  launch(r.per_channel(), {128, 1, 1}, [&] { bn_bwd_finalize(partial.data(), saved.data(), coef.data(), dparams.data(), C, P, M); });
  launch(r.grid(), {256, 1, 1}, [&] { bn_bwd_dx_f32(x.data(), g.data(), saved.data(), coef.data(), dx.data(), dparams.data(), C, HW, Q, R); });

  std::vector<double> mean(c), var(c), ry(total), rdx(total), dgamma(c), dbeta(c);
  for (int k = 0; k < c; ++k) {
    double s = 0, s2 = 0, gs = 0, gx = 0;
    for (int i = 0; i < n; ++i)
      for (size_t p = 0; p < hw; ++p) s += x[(size_t(i) * c + k) * hw + p];
    mean[k] = s / M;
    for (int i = 0; i < n; ++i)
      for (size_t p = 0; p < hw; ++p) s2 += std::pow(x[(size_t(i) * c + k) * hw + p] - mean[k], 2);
    var[k] = s2 / M;
    const double invstd = 1 / std::sqrt(var[k] + eps), gamma = params[c + k], beta = params[2 * c + k];
    auto through = [&](size_t at) {
      const double pre = (x[at] - mean[k]) * invstd * gamma + beta;
      ry[at] = relu ? std::max(pre, 0.0) : pre;
      return (relu && pre <= 0) ? 0.0 : double(g[at]);
    };
    for (int i = 0; i < n; ++i)
      for (size_t p = 0; p < hw; ++p) {
        const size_t at = (size_t(i) * c + k) * hw + p;
        const double gg = through(at);
        gs += gg;
        gx += gg * (x[at] - mean[k]) * invstd;
      }
    dbeta[k] = gs;
    dgamma[k] = gx;
    for (int i = 0; i < n; ++i)
      for (size_t p = 0; p < hw; ++p) {
        const size_t at = (size_t(i) * c + k) * hw + p;
        const double xhat = (x[at] - mean[k]) * invstd;
        rdx[at] = gamma * invstd * (through(at) - gs / M - xhat * gx / M);
      }
  }
  const std::string what = "batch norm [" + std::to_string(n) + "," + std::to_string(c) + "," + std::to_string(h) + "," +
                           std::to_string(w) + "] relu=" + std::to_string(relu) + " ";
  report(what + "mean", rel(std::vector<float>(saved.begin(), saved.begin() + c), mean), 1e-5);
  report(what + "var", rel(std::vector<float>(saved.begin() + c, saved.begin() + 2 * c), var), 1e-5);
  report(what + "y", rel(y, ry), 1e-5);
  report(what + "dx", rel(dx, rdx), 1e-4);
  report(what + "dgamma", rel(std::vector<float>(dparams.begin() + c, dparams.begin() + 2 * c), dgamma), 1e-4);
  report(what + "dbeta", rel(std::vector<float>(dparams.begin() + 2 * c, dparams.end()), dbeta), 1e-4);
  // The bias gradient is zero up to rounding: bounded by the input gradient's size.
  double dbias = 0, dxmax = 0;
  for (int k = 0; k < c; ++k) dbias = std::max(dbias, double(std::fabs(dparams[k])));
  for (double v : rdx) dxmax = std::max(dxmax, std::fabs(v));
  report(what + "dbias (zero up to rounding, relative to max |dx|)", dbias / std::max(dxmax, 1e-6), 1e-2);

  std::vector<float> sums(c);
  launch(r.grid(), {256, 1, 1}, [&] { bn_sums_f32(x.data(), partial.data(), C, HW, Q, 0); });
  launch(r.per_channel(), {128, 1, 1}, [&] { channel_sums_finalize(partial.data(), sums.data(), C, P); });
  std::vector<double> rs(c);
  for (int k = 0; k < c; ++k) rs[k] = mean[k] * M;
  report("channel sums [" + std::to_string(n) + "," + std::to_string(c) + "," + std::to_string(h) + "," + std::to_string(w) + "]",
         rel(sums, rs), 1e-5);
}

void check_maxpool(std::mt19937& rng, int n, int c, int h, int w) {
  const size_t planes = size_t(n) * c, oh = h / 2, ow = w / 2;
  std::vector<float> x = randn(rng, planes * h * w, 2.f), g = randn(rng, planes * oh * ow);
  for (auto& v : x) v = std::round(v);  // ties: the first maximum (row-major) wins
  std::vector<float> y(planes * oh * ow), gx(planes * h * w, 0.f);
  const size_t PL = planes;
  launch(grid1(y.size()), {256, 1, 1}, [&] { maxpool2x2_f32(x.data(), y.data(), PL, h, w); });
  launch(grid1(y.size()), {256, 1, 1}, [&] { maxpool2x2_bwd_f32(x.data(), g.data(), gx.data(), PL, h, w); });
  std::vector<double> ry(y.size()), rgx(gx.size(), 0.0);
  for (size_t p = 0; p < planes; ++p)
    for (size_t oy = 0; oy < oh; ++oy)
      for (size_t ox = 0; ox < ow; ++ox) {
        size_t best = p * h * w + 2 * oy * w + 2 * ox;
        for (size_t at : {best + 1, best + w, best + w + 1})
          if (x[at] > x[best]) best = at;
        ry[(p * oh + oy) * ow + ox] = x[best];
        rgx[best] = g[(p * oh + oy) * ow + ox];
      }
  const std::string what = "maxpool 2x2 [" + std::to_string(n) + "," + std::to_string(c) + "," + std::to_string(h) + "," + std::to_string(w) + "] ";
  report(what + "y", rel(y, ry), 0.0);
  report(what + "dx", rel(gx, rgx), 0.0);
}

void check_separable(std::mt19937& rng, int n, int ci, int co, int h, int w, int k, bool relu) {
  const size_t hw = size_t(h) * w;
  std::vector<float> x = randn(rng, n * ci * hw), gw = randn(rng, size_t(ci) * k * 9, 0.5f), gb = randn(rng, ci, 0.5f);
  std::vector<float> pw = randn(rng, size_t(co) * ci, 0.3f), pb = randn(rng, co, 0.5f), y(n * co * hw);
  const dim3 grid{unsigned(((w + 15) / 16) * ((h + 3) / 4)), unsigned((co + 63) / 64), unsigned(n)};
  launch(grid, {256, 1, 1}, [&] { sep_conv_fused_f32(x.data(), gw.data(), gb.data(), pw.data(), pb.data(), y.data(), ci, co, h, w, k, relu); });
  std::vector<double> mid(ci * hw), ry(y.size());
  for (int b = 0; b < n; ++b) {
    for (int c = 0; c < ci; ++c)
      for (int py = 0; py < h; ++py)
        for (int px = 0; px < w; ++px) {
          double v = gb[c];
          for (int j = 0; j < k; ++j)
            for (int dy = 0; dy < 3; ++dy)
              for (int dx = 0; dx < 3; ++dx) {
                const int sy = py + dy - 1, sx = px + dx - 1;
                if (sy < 0 || sy >= h || sx < 0 || sx >= w) continue;
                v += double(gw[(size_t(c) * k + j) * 9 + dy * 3 + dx]) * x[(size_t(b) * ci + (c / k) * k + j) * hw + size_t(sy) * w + sx];
              }
          mid[c * hw + size_t(py) * w + px] = v;
        }
    for (int o = 0; o < co; ++o)
      for (size_t p = 0; p < hw; ++p) {
        double v = pb[o];
        for (int c = 0; c < ci; ++c) v += double(pw[size_t(o) * ci + c]) * mid[c * hw + p];
        ry[(size_t(b) * co + o) * hw + p] = relu ? std::max(v, 0.0) : v;
      }
  }
  report("separable set fused [" + std::to_string(n) + "," + std::to_string(ci) + "->" + std::to_string(co) + "," + std::to_string(h) +
             "," + std::to_string(w) + "] k=" + std::to_string(k) + " relu=" + std::to_string(relu),
         rel(y, ry), 1e-5);
}

// gconv3x3 (forward) and gconv3x3_grad_w against loops, with the launch geometry of
// ops/cuda.rs `grouped_conv3x3` / `grouped_conv3x3_grad_w`.
void check_grouped_conv(std::mt19937& rng, int n, int c, int k, int h, int w) {
  const size_t hw = size_t(h) * w;
  std::vector<float> x = randn(rng, n * c * hw), wt = randn(rng, size_t(c) * k * 9, 0.5f), b = randn(rng, c), gy = randn(rng, n * c * hw);
  std::vector<float> y(n * c * hw), gw(size_t(c) * k * 9, 0.f);
  launch({unsigned((w + 31) / 32), unsigned((h + 7) / 8), unsigned(n * c)}, {32, 8, 1},
         [&] { gconv3x3_f32(x.data(), wt.data(), b.data(), y.data(), c, h, w, k, 1); });
  const unsigned splits = unsigned(std::clamp<size_t>(size_t(n) * hw / (256 * 32), 1, 64));
  launch({unsigned(c * k), splits, 1}, {256, 1, 1}, [&] { gconv3x3_grad_w_f32(gy.data(), x.data(), gw.data(), n, c, h, w, k); });
  std::vector<double> ry(y.size()), rgw(gw.size(), 0.0);
  auto at = [&](int b_, int ch, int yy, int xx) -> double {
    return (yy < 0 || yy >= h || xx < 0 || xx >= w) ? 0.0 : x[(size_t(b_) * c + ch) * hw + size_t(yy) * w + xx];
  };
  for (int b_ = 0; b_ < n; ++b_)
    for (int o = 0; o < c; ++o)
      for (int yy = 0; yy < h; ++yy)
        for (int xx = 0; xx < w; ++xx) {
          double v = b[o];
          const double g = gy[(size_t(b_) * c + o) * hw + size_t(yy) * w + xx];
          for (int j = 0; j < k; ++j)
            for (int t = 0; t < 9; ++t) {
              const double in = at(b_, (o / k) * k + j, yy + t / 3 - 1, xx + t % 3 - 1);
              v += double(wt[(size_t(o) * k + j) * 9 + t]) * in;
              rgw[(size_t(o) * k + j) * 9 + t] += g * in;
            }
          ry[(size_t(b_) * c + o) * hw + size_t(yy) * w + xx] = v;
        }
  const std::string what = "grouped conv 3x3 [" + std::to_string(n) + "," + std::to_string(c) + "," + std::to_string(h) + "," + std::to_string(w) + "] k=" + std::to_string(k);
  report(what + " y", rel(y, ry), 1e-5);
  report(what + " dw", rel(gw, rgw), 1e-4);
}

void check_bias_act_and_upsample(std::mt19937& rng) {
  const int n = 2, c = 3, h = 5, w = 7;
  const size_t plane = size_t(h) * w, total = n * c * plane;
  std::vector<float> x = randn(rng, total), b = randn(rng, c), y(total);
  const size_t T = total, PL = plane;
  launch(grid1(total), {256, 1, 1}, [&] { bias_act_f32(x.data(), b.data(), y.data(), T, c, PL, 1); });
  std::vector<double> ry(total);
  for (size_t i = 0; i < total; ++i) ry[i] = std::max(double(x[i]) + b[(i / plane) % c], 0.0);
  report("bias + ReLU [2,3,5,7]", rel(y, ry), 1e-6);
  // Adjoint of align-corners bilinear x2: <up(u), g> = <u, up_bwd(g)> for every u, so build
  // the forward's matrix row by row and apply its transpose.
  std::vector<float> g = randn(rng, n * c * 4 * plane), gx(total, 0.f);
  const size_t P = size_t(n) * c;
  launch(grid1(g.size()), {256, 1, 1}, [&] { upsample2x_bwd_f32(g.data(), gx.data(), P, h, w); });
  auto taps = [](int i, int len, int& i0, int& i1, double& f) {
    if (len == 1) { i0 = i1 = 0; f = 0; return; }
    const double pos = double(i) * (len - 1) / (2 * len - 1);
    i0 = std::min(int(std::floor(pos)), len - 1);
    i1 = std::min(i0 + 1, len - 1);
    f = pos - i0;
  };
  std::vector<float> up(g.size());
  launch(grid1(up.size()), {256, 1, 1}, [&] { upsample2x_f32(x.data(), up.data(), P, h, w); });
  // The forward's taps, and its transpose for the adjoint.
  std::vector<double> rgx(total, 0.0), rup(up.size());
  for (size_t p = 0; p < P; ++p)
    for (int oy = 0; oy < 2 * h; ++oy)
      for (int ox = 0; ox < 2 * w; ++ox) {
        int y0, y1, x0, x1;
        double fy, fx;
        taps(oy, h, y0, y1, fy);
        taps(ox, w, x0, x1, fx);
        const size_t o = (p * 2 * h + oy) * 2 * w + ox;
        const int at[4] = {y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1};
        const double wt[4] = {(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx};
        for (int k = 0; k < 4; ++k) {
          rgx[p * plane + at[k]] += g[o] * wt[k];
          rup[o] += x[p * plane + at[k]] * wt[k];
        }
      }
  report("upsample x2 backward [2,3,5,7]", rel(gx, rgx), 1e-5);
  report("upsample x2 [2,3,5,7]", rel(up, rup), 1e-5);
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < up.size(); ++i) lhs += double(up[i]) * g[i];
  for (size_t i = 0; i < x.size(); ++i) rhs += double(x[i]) * gx[i];
  report("upsample x2 forward/backward adjoint", std::fabs(lhs - rhs) / std::max(std::fabs(lhs), 1e-6), 1e-5);
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  // Several reduction blocks per plane (70 x 130 = 9100 values: 3), one (9 x 11), batch 1.
  check_batch_norm(rng, 2, 3, 70, 130, true);
  check_batch_norm(rng, 3, 4, 9, 11, false);
  check_batch_norm(rng, 1, 2, 64, 65, true);
  check_maxpool(rng, 2, 3, 9, 14);
  check_maxpool(rng, 1, 2, 8, 8);
  // Sizes that are not multiples of the tiles (16 x 4 pixels, 64 outputs, 32 inputs), grouped
  // inputs, and the first set of a network (3 inputs).
  check_separable(rng, 2, 40, 70, 9, 21, 1, true);
  check_separable(rng, 1, 36, 64, 5, 16, 2, false);
  check_separable(rng, 1, 3, 64, 4, 33, 1, true);
  check_separable(rng, 1, 96, 130, 3, 3, 4, true);
  check_grouped_conv(rng, 2, 6, 1, 9, 40);
  check_grouped_conv(rng, 1, 8, 4, 17, 12);
  check_bias_act_and_upsample(rng);
  std::printf("%s: %d failed\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}
