// jaxsr's CPU kernels for the model's 3x3 'same' stride-1 convolutions (NHWC x HWIO, float32),
// called from XLA through jax.ffi (jaxsr/models/native_conv.py compiles this file on first use with
// -march=native, so the vector width below is the machine's).
//
// Why: XLA:CPU's own convolutions (YNNPACK) reach 20-90 GFLOP/s on this network's few-channel,
// high-resolution layers, the weight gradient worst, while a register-tiled direct convolution reaches
// the FMA units' rate. Both kernels are one loop nest around a register tile:
//   weight gradient: dw[tap][i][j] += x[p + tap - 1][i] * dy[p][j], a tile of CB input channels
//     (broadcast) x NV vectors of output channels, accumulated over a chunk of image rows held in L2;
//   forward: y[p][j] = sum_tap sum_i x[p + tap - 1][i] * w[tap][i][j], a tile of PB pixels x NV
//     vectors of output channels, accumulated over taps and input channels; the input gradient is the
//     forward conv of dy with the kernel flipped in space and its channels swapped.
// Work is split over image rows and run on XLA's own intra-op thread pool (parallel_units). The weight
// gradient sums a fixed number of row groups, each in its own buffer, in a fixed order: the result does
// not depend on which thread ran which group.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if defined(__AVX512F__)
constexpr int VW = 16; constexpr int CB = 8;
#else
constexpr int VW = 8; constexpr int CB = 6;
#endif
typedef float vec __attribute__((vector_size(VW * 4), aligned(4)));

static inline vec load(const float* p) { vec v; std::memcpy(&v, p, sizeof(v)); return v; }
static inline void store(float* p, vec v) { std::memcpy(p, &v, sizeof(v)); }

// Runs body(0), ..., body(units - 1), each once, on the calling thread and on up to num_threads - 1 tasks of
// XLA's pool, and returns when all are done. The caller takes units too, so this finishes even when no pool
// thread is free; a task that starts after the last unit was taken touches only the shared counters.
template <typename Body>
static void parallel_units(ffi::ThreadPool& pool, int64_t units, Body body) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    Body body;
    explicit State(Body b) : body(std::move(b)) {}
  };
  auto state = std::make_shared<State>(std::move(body));
  auto work = [state, units]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < units;) {
      state->body(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(std::max<int64_t>(pool.num_threads(), 1), units) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work]() { work(); });
  work();
  while (state->done.load(std::memory_order_acquire) < units) std::this_thread::yield();
}

// ---- weight gradient
struct Problem {
  const float* a; const float* b;  // a: [N,H,W,CA] shifted operand, b: [N,H,W,CB] unshifted
  int64_t n, h, w, ca, cb;
  int sign;  // a's pixel = b's pixel + sign * (tap - 1)
};

// out[tap][i][j] += sum over pixels of image `img`, rows [y0,y1), of a[p + shift][i] * b[p][j]
template <int NV>
static void tile(const Problem& P, float* out, int64_t img, int64_t y0, int64_t y1, int ty, int tx,
                 int64_t i0, int ni, int64_t j0) {
  const int64_t dy = P.sign * (ty - 1), dx = P.sign * (tx - 1);
  const int64_t ya = std::max(y0, -dy), yb = std::min(y1, P.h - dy);
  const int64_t xa = std::max<int64_t>(0, -dx), xb = std::min(P.w, P.w - dx);
  if (ya >= yb || xa >= xb) return;
  vec acc[CB][NV];
  float* o = out + ((int64_t)(ty * 3 + tx) * P.ca + i0) * P.cb + j0;
  for (int i = 0; i < ni; ++i) for (int v = 0; v < NV; ++v) acc[i][v] = load(o + i * P.cb + v * VW);
  for (int i = ni; i < CB; ++i) for (int v = 0; v < NV; ++v) acc[i][v] = vec{};
  for (int64_t y = ya; y < yb; ++y) {
    const float* brow = P.b + ((img * P.h + y) * P.w) * P.cb + j0;
    const float* arow = P.a + ((img * P.h + y + dy) * P.w + dx) * P.ca + i0;
    for (int64_t x = xa; x < xb; ++x) {
      vec bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = load(brow + x * P.cb + v * VW);
      const float* ap = arow + x * P.ca;
      if (ni == CB) {
#pragma GCC unroll 8
        for (int i = 0; i < CB; ++i) { vec av = vec{} + ap[i]; for (int v = 0; v < NV; ++v) acc[i][v] += av * bv[v]; }
      } else {
        for (int i = 0; i < ni; ++i) { vec av = vec{} + ap[i]; for (int v = 0; v < NV; ++v) acc[i][v] += av * bv[v]; }
      }
    }
  }
  for (int i = 0; i < ni; ++i) for (int v = 0; v < NV; ++v) store(o + i * P.cb + v * VW, acc[i][v]);
}

static void tile_scalar(const Problem& P, float* out, int64_t img, int64_t y0, int64_t y1, int ty, int tx, int64_t j) {
  const int64_t dy = P.sign * (ty - 1), dx = P.sign * (tx - 1);
  const int64_t ya = std::max(y0, -dy), yb = std::min(y1, P.h - dy);
  const int64_t xa = std::max<int64_t>(0, -dx), xb = std::min(P.w, P.w - dx);
  float* o = out + (int64_t)(ty * 3 + tx) * P.ca * P.cb + j;
  for (int64_t y = ya; y < yb; ++y) {
    const float* brow = P.b + ((img * P.h + y) * P.w) * P.cb + j;
    const float* arow = P.a + ((img * P.h + y + dy) * P.w + dx) * P.ca;
    for (int64_t x = xa; x < xb; ++x) {
      const float bj = brow[x * P.cb];
      const float* ap = arow + x * P.ca;
      for (int64_t i = 0; i < P.ca; ++i) o[i * P.cb] += ap[i] * bj;
    }
  }
}

// rows [r0, r1) of the N*H image rows into out
static void rows(const Problem& P, float* out, int64_t r0, int64_t r1) {
  // chunks of rows that keep a's and b's rows in L2
  const int64_t row_bytes = P.w * (P.ca + P.cb) * 4;
  const int64_t chunk = std::max<int64_t>(1, (256 << 10) / row_bytes);
  for (int64_t r = r0; r < r1;) {
    const int64_t img = r / P.h, y0 = r % P.h, y1 = std::min({P.h, y0 + chunk, y0 + (r1 - r)});
    for (int t = 0; t < 9; ++t) {
      for (int64_t i0 = 0; i0 < P.ca; i0 += CB) {
        const int ni = (int)std::min<int64_t>(CB, P.ca - i0);
        int64_t j = 0;
        for (; j + 2 * VW <= P.cb; j += 2 * VW) tile<2>(P, out, img, y0, y1, t / 3, t % 3, i0, ni, j);
        for (; j + VW <= P.cb; j += VW) tile<1>(P, out, img, y0, y1, t / 3, t % 3, i0, ni, j);
      }
      for (int64_t j = P.cb - P.cb % VW; j < P.cb; ++j) tile_scalar(P, out, img, y0, y1, t / 3, t % 3, j);
    }
    r += y1 - y0;
  }
}

using Image = ffi::Buffer<ffi::F32, 4>;
using Image4 = ffi::ResultBuffer<ffi::F32, 4>;

static ffi::Error ConvDwImpl(ffi::ThreadPool pool, Image x, Image dy, Image4 dw) {
  auto xd = x.dimensions(), gd = dy.dimensions(), wd = dw->dimensions();
  const int64_t n = xd[0], h = xd[1], w = xd[2], c = xd[3], k = gd[3];
  if (gd[0] != n || gd[1] != h || gd[2] != w || wd[0] != 3 || wd[1] != 3 || wd[2] != c || wd[3] != k)
    return ffi::Error::InvalidArgument("conv3x3 weight gradient: x, dy and dw shapes do not match");
  // vectorise over the wider of the two channel counts (the output's when equal)
  const bool swap = k < VW && c > k;
  Problem P = swap ? Problem{dy.typed_data(), x.typed_data(), n, h, w, k, c, -1}
                   : Problem{x.typed_data(), dy.typed_data(), n, h, w, c, k, +1};
  const int64_t total_rows = n * h, size = 9 * c * k;
  const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(std::max<int64_t>(pool.num_threads(), 1), total_rows));
  auto partial = std::make_shared<std::vector<std::vector<float>>>(groups, std::vector<float>(size, 0.0f));
  parallel_units(pool, groups, [partial, P, total_rows, groups](int64_t g) {
    rows(P, (*partial)[g].data(), total_rows * g / groups, total_rows * (g + 1) / groups);
  });
  float* out = dw->typed_data();
  std::vector<float> sum(size, 0.0f);
  for (int64_t g = 0; g < groups; ++g) for (int64_t i = 0; i < size; ++i) sum[i] += (*partial)[g][i];
  if (!swap) std::memcpy(out, sum.data(), size * 4);
  else  // sum is [tap][k][c]: write [tap][c][k]
    for (int t = 0; t < 9; ++t) for (int64_t ci = 0; ci < c; ++ci) for (int64_t ki = 0; ki < k; ++ki)
      out[(t * c + ci) * k + ki] = sum[(t * k + ki) * c + ci];
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv3x3WeightGradient, ConvDwImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<Image>().Arg<Image>().Ret<Image>());

// ---- forward: out[p][k] = sum_tap sum_c x[p + tap - 1][c] w[tap][c][k]
constexpr int PB = (VW == 16) ? 8 : 6;  // output pixels per register tile

struct Fwd {
  const float* x; const float* w; float* out;
  int64_t n, h, w_, c, k;
  const float* zeros;  // c zeros: the padding
  const float* w_tail;  // w[tap][c][j] for the k % VW last output channels j, as [j][tap][c]
};

// pixels [x0, x0 + np) of row (img, y), output channels [j0, j0 + NV*VW)
template <int NV, bool FULL>
static void fwd_tile(const Fwd& F, int64_t img, int64_t y, int64_t x0, int np, int64_t j0) {
  vec acc[PB][NV];
  for (int i = 0; i < PB; ++i) for (int v = 0; v < NV; ++v) acc[i][v] = vec{};
  for (int ty = 0; ty < 3; ++ty) {
    const int64_t yy = y + ty - 1;
    if (yy < 0 || yy >= F.h) continue;
    const float* xrow = F.x + (img * F.h + yy) * F.w_ * F.c;
    for (int tx = 0; tx < 3; ++tx) {
      const float* wt = F.w + (int64_t)(ty * 3 + tx) * F.c * F.k + j0;
      if (FULL) {  // every pixel's neighbour x0 + i + tx - 1 is inside the row
        const float* xp = xrow + (x0 + tx - 1) * F.c;
        for (int64_t ci = 0; ci < F.c; ++ci) {
          vec wv[NV];
          for (int v = 0; v < NV; ++v) wv[v] = load(wt + ci * F.k + v * VW);
#pragma GCC unroll 8
          for (int i = 0; i < PB; ++i) { vec a = vec{} + xp[i * F.c + ci]; for (int v = 0; v < NV; ++v) acc[i][v] += a * wv[v]; }
        }
      } else {  // at a row's ends, or fewer than PB pixels left: missing neighbours read a row of zeros
        const float* xp[PB];
        for (int i = 0; i < PB; ++i) {
          const int64_t xx = x0 + i + tx - 1;
          xp[i] = (i < np && xx >= 0 && xx < F.w_) ? xrow + xx * F.c : F.zeros;
        }
        for (int64_t ci = 0; ci < F.c; ++ci) {
          vec wv[NV];
          for (int v = 0; v < NV; ++v) wv[v] = load(wt + ci * F.k + v * VW);
#pragma GCC unroll 8
          for (int i = 0; i < PB; ++i) { vec a = vec{} + xp[i][ci]; for (int v = 0; v < NV; ++v) acc[i][v] += a * wv[v]; }
        }
      }
    }
  }
  float* o = F.out + ((img * F.h + y) * F.w_ + x0) * F.k + j0;
  for (int i = 0; i < np; ++i) for (int v = 0; v < NV; ++v) store(o + i * F.k + v * VW, acc[i][v]);
}

// output channels j of k % VW: per pixel, a dot product over (tap, c) vectorised over c
static void fwd_scalar(const Fwd& F, int64_t img, int64_t y, int64_t j) {
  for (int64_t xo = 0; xo < F.w_; ++xo) {
    vec acc = vec{};
    float tail = 0.0f;
    for (int ty = 0; ty < 3; ++ty) {
      const int64_t yy = y + ty - 1;
      if (yy < 0 || yy >= F.h) continue;
      for (int tx = 0; tx < 3; ++tx) {
        const int64_t xx = xo + tx - 1;
        if (xx < 0 || xx >= F.w_) continue;
        const float* xp = F.x + ((img * F.h + yy) * F.w_ + xx) * F.c;
        const float* wt = F.w_tail + ((j - F.k / VW * VW) * 9 + ty * 3 + tx) * F.c;
        int64_t ci = 0;
        for (; ci + VW <= F.c; ci += VW) acc += load(xp + ci) * load(wt + ci);
        for (; ci < F.c; ++ci) tail += xp[ci] * wt[ci];
      }
    }
    float s = tail;
    for (int l = 0; l < VW; ++l) s += acc[l];
    F.out[((img * F.h + y) * F.w_ + xo) * F.k + j] = s;
  }
}

static void fwd_row(const Fwd& F, int64_t r) {
  const int64_t img = r / F.h, y = r % F.h;
  int64_t j = 0;
  auto blocks = [&](auto nv_tag) {
    constexpr int NV = decltype(nv_tag)::value;
    for (int64_t x0 = 0; x0 < F.w_; x0 += PB) {
      const int np = (int)std::min<int64_t>(PB, F.w_ - x0);
      if (x0 >= 1 && x0 + PB + 1 <= F.w_) fwd_tile<NV, true>(F, img, y, x0, PB, j);
      else fwd_tile<NV, false>(F, img, y, x0, np, j);
    }
  };
  for (; j + 2 * VW <= F.k; j += 2 * VW) blocks(std::integral_constant<int, 2>{});
  for (; j + VW <= F.k; j += VW) blocks(std::integral_constant<int, 1>{});
  for (; j < F.k; ++j) fwd_scalar(F, img, y, j);
}

// the forward conv of x [n, h, w, c] with w [3, 3, c, k] into out [n, h, w, k]; `keep` holds what w points
// into when it is not an argument of the call
static void forward(ffi::ThreadPool& pool, const float* x, const float* w, float* out, int64_t n, int64_t h,
                    int64_t wd, int64_t c, int64_t k, std::shared_ptr<std::vector<float>> keep) {
  auto zeros = std::make_shared<std::vector<float>>(c, 0.0f);
  const int64_t k0 = k / VW * VW;
  auto w_tail = std::make_shared<std::vector<float>>((k - k0) * 9 * c);
  for (int64_t j = k0; j < k; ++j)
    for (int64_t t = 0; t < 9; ++t)
      for (int64_t ci = 0; ci < c; ++ci) (*w_tail)[((j - k0) * 9 + t) * c + ci] = w[(t * c + ci) * k + j];
  Fwd F{x, w, out, n, h, wd, c, k, zeros->data(), w_tail->data()};
  const int64_t total = n * h;
  const int64_t chunk = std::max<int64_t>(1, total / (4 * std::max<int64_t>(pool.num_threads(), 1)));
  parallel_units(pool, (total + chunk - 1) / chunk, [zeros, w_tail, keep, F, total, chunk](int64_t i) {
    for (int64_t r = i * chunk; r < std::min(total, (i + 1) * chunk); ++r) fwd_row(F, r);
  });
}

static ffi::Error ConvFwdImpl(ffi::ThreadPool pool, Image x, Image w, Image4 out) {
  auto xd = x.dimensions(), wd = w.dimensions(), od = out->dimensions();
  if (wd[0] != 3 || wd[1] != 3 || wd[2] != xd[3] || od[0] != xd[0] || od[1] != xd[1] || od[2] != xd[2] || od[3] != wd[3])
    return ffi::Error::InvalidArgument("conv3x3 forward: x, w and y shapes do not match");
  forward(pool, x.typed_data(), w.typed_data(), out->typed_data(), xd[0], xd[1], xd[2], xd[3], wd[3], nullptr);
  return ffi::Error::Success();
}

// dL/dx of the conv of x with w given dy: the forward conv of dy with w flipped in space and its channels
// swapped, wt[tap][k][c] = w[8 - tap][c][k], built here (XLA's own transpose of w took longer than this)
static ffi::Error ConvDxImpl(ffi::ThreadPool pool, Image dy, Image w, Image4 dx) {
  auto gd = dy.dimensions(), wd = w.dimensions(), od = dx->dimensions();
  const int64_t c = wd[2], k = wd[3];
  if (wd[0] != 3 || wd[1] != 3 || gd[3] != k || od[0] != gd[0] || od[1] != gd[1] || od[2] != gd[2] || od[3] != c)
    return ffi::Error::InvalidArgument("conv3x3 input gradient: dy, w and dx shapes do not match");
  auto wt = std::make_shared<std::vector<float>>(9 * c * k);
  const float* src = w.typed_data();
  constexpr int64_t B = 16;  // square blocks: both the reads and the writes stay within a few cache lines
  for (int64_t t = 0; t < 9; ++t)
    for (int64_t c0 = 0; c0 < c; c0 += B)
      for (int64_t k0 = 0; k0 < k; k0 += B)
        for (int64_t ki = k0; ki < std::min(k, k0 + B); ++ki)
          for (int64_t ci = c0; ci < std::min(c, c0 + B); ++ci)
            (*wt)[(t * k + ki) * c + ci] = src[((8 - t) * c + ci) * k + ki];
  forward(pool, dy.typed_data(), wt->data(), dx->typed_data(), gd[0], gd[1], gd[2], k, c, wt);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv3x3InputGradient, ConvDxImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<Image>().Arg<Image>().Ret<Image>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv3x3Forward, ConvFwdImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<Image>().Arg<Image>().Ret<Image>());
