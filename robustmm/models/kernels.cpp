// TFR-Net's CPU kernels, compiled and loaded by robustmm/models/kernels.py: softmax attention for heads of a few
// dimensions, and dropout.
//
// Attention. PyTorch's CPU flash attention spends most of its time outside the exponentials when a head has 5 dimensions
// (TFR-Net's 30 / 6); here one pass over a row's keys computes, exponentiates and uses each score while it is in a
// register. Each (sample, head) is one thread's work, in a fixed order: results do not depend on the thread count.
// Layouts: q (heads, queries, dim); k and v transposed, (heads, dim, keys); `allowed` (heads, keys) 1 or 0.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

// Cephes' expf: range reduction to [-ln2/2, ln2/2], a degree-6 polynomial, 2^n from the exponent bits; branch-free,
// so the loops that call it vectorise. Relative error about 1e-7 (float32's own rounding).
inline float exp_of(float x) {
    x = std::min(std::max(x, -87.0f), 88.0f);
    const float n = std::floor(x * 1.44269504088896341f + 0.5f);
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float power;
    std::memcpy(&power, &bits, sizeof power);
    return y * power;
}
inline double exp_of(double x) { return std::exp(std::min(x, 700.0)); }  // float64 is for gradcheck

// DIM > 0: the head size known when compiling (with_head_size); 0: read from `runtime_dim`.
template <typename T, int DIM>
void forward(const T* q, const T* kt, const T* vt, const T* allowed, T* out, T* lse, int64_t heads,
             int64_t queries, int64_t keys, int64_t runtime_dim, int threads) {
    const int64_t dim = DIM ? DIM : runtime_dim;
    const T scale = T(1) / std::sqrt(T(dim));
#pragma omp parallel num_threads(threads)
    {
        std::vector<T> buffer(keys);
        T* __restrict s = buffer.data();
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < heads; ++bh) {
            const T* __restrict k_h = kt + bh * dim * keys;
            const T* __restrict v_h = vt + bh * dim * keys;
            const T* __restrict mask = allowed + bh * keys;
            for (int64_t i = 0; i < queries; ++i) {
                const T* qi = q + (bh * queries + i) * dim;
                T m = -INFINITY;
#pragma omp simd reduction(max : m)
                for (int64_t j = 0; j < keys; ++j) {
                    T score = 0;
#pragma GCC unroll 8
                    for (int64_t d = 0; d < dim; ++d) score += qi[d] * k_h[d * keys + j];
                    s[j] = score * scale;
                    m = std::max(m, mask[j] != 0 ? s[j] : T(-INFINITY));
                }
                T total = 0;
#pragma omp simd reduction(+ : total)
                for (int64_t j = 0; j < keys; ++j) {
                    s[j] = exp_of(s[j] - m) * mask[j];
                    total += s[j];
                }
                T* oi = out + (bh * queries + i) * dim;
                for (int64_t d = 0; d < dim; ++d) {
                    T acc = 0;
#pragma omp simd reduction(+ : acc)
                    for (int64_t j = 0; j < keys; ++j) acc += s[j] * v_h[d * keys + j];
                    oi[d] = acc / total;
                }
                lse[bh * queries + i] = m + std::log(total);
            }
        }
    }
}

// Gradients of q, k and v (k's and v's transposed, as their inputs) from the row log-sum-exps of the forward.
template <typename T, int DIM>
void backward(const T* q, const T* kt, const T* vt, const T* allowed, const T* out, const T* lse, const T* grad_out,
              T* grad_q, T* grad_kt, T* grad_vt, int64_t heads, int64_t queries, int64_t keys, int64_t runtime_dim,
              int threads) {
    const int64_t dim = DIM ? DIM : runtime_dim;
    const T scale = T(1) / std::sqrt(T(dim));
#pragma omp parallel num_threads(threads)
    {
        std::vector<T> buffer(2 * keys);
        T* __restrict p = buffer.data();
        T* __restrict ds = p + keys;
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < heads; ++bh) {
            const T* __restrict k_h = kt + bh * dim * keys;
            const T* __restrict v_h = vt + bh * dim * keys;
            const T* __restrict mask = allowed + bh * keys;
            T* __restrict gk = grad_kt + bh * dim * keys;
            T* __restrict gv = grad_vt + bh * dim * keys;
            std::fill(gk, gk + dim * keys, T(0));
            std::fill(gv, gv + dim * keys, T(0));
            for (int64_t i = 0; i < queries; ++i) {
                const int64_t row = bh * queries + i;
                const T* qi = q + row * dim;
                const T* goi = grad_out + row * dim;
                T delta = 0;  // sum over the row of p * dp: the softmax backward's shift
                for (int64_t d = 0; d < dim; ++d) delta += goi[d] * out[row * dim + d];
                const T log_sum = lse[row];
#pragma omp simd
                for (int64_t j = 0; j < keys; ++j) {
                    T score = 0;
#pragma GCC unroll 8
                    for (int64_t d = 0; d < dim; ++d) score += qi[d] * k_h[d * keys + j];
                    p[j] = exp_of(score * scale - log_sum) * mask[j];
                }
#pragma omp simd
                for (int64_t j = 0; j < keys; ++j) {
                    T grad_p = 0;
#pragma GCC unroll 8
                    for (int64_t d = 0; d < dim; ++d) grad_p += goi[d] * v_h[d * keys + j];
                    ds[j] = p[j] * (grad_p - delta) * scale;
                }
                for (int64_t d = 0; d < dim; ++d) {
                    const T g = goi[d];
                    T* __restrict gv_d = gv + d * keys;
#pragma omp simd
                    for (int64_t j = 0; j < keys; ++j) gv_d[j] += g * p[j];
                }
                for (int64_t d = 0; d < dim; ++d) {
                    const T qd = qi[d];
                    const T* __restrict k_d = k_h + d * keys;
                    T* __restrict gk_d = gk + d * keys;
                    T acc = 0;
#pragma omp simd reduction(+ : acc)
                    for (int64_t j = 0; j < keys; ++j) {
                        acc += ds[j] * k_d[j];
                        gk_d[j] += qd * ds[j];
                    }
                    grad_q[row * dim + d] = acc;
                }
            }
        }
    }
}

// Calls `call` with the head size as a compile-time constant where the kernels are specialised for it (the loops
// over it unroll), else with 0 (read at run time); kernels.py's MAX_HEAD_DIM follows this list.
template <typename Call>
void with_head_size(int64_t dim, Call call) {
    switch (dim) {
        case 1: return call(std::integral_constant<int, 1>{});
        case 2: return call(std::integral_constant<int, 2>{});
        case 3: return call(std::integral_constant<int, 3>{});
        case 4: return call(std::integral_constant<int, 4>{});
        case 5: return call(std::integral_constant<int, 5>{});
        case 6: return call(std::integral_constant<int, 6>{});
        case 8: return call(std::integral_constant<int, 8>{});
        default: return call(std::integral_constant<int, 0>{});
    }
}

// splitmix64's finaliser: a counter-based generator, element i's bits depend on (seed, i) alone.
inline uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

}  // namespace

extern "C" {
// Dropout: kept[i] = (16 bits of element i) >= threshold, the keep probability 1 - threshold / 65536 (kept() in
// tfr_net.py draws the same way); out = x * scale where kept, else 0. One pass instead of drawing, comparing and
// selecting in three.
void dropout_forward_f32(const float* x, float* out, uint8_t* kept, int64_t count, uint64_t seed, int32_t threshold,
                         float scale, int threads) {
    const int64_t blocks = (count + 3) / 4;  // 64 bits: four elements
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
        const uint64_t bits = mix(seed + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(b + 1));
        for (int64_t i = 4 * b; i < std::min(4 * b + 4, count); ++i) {
            const bool keep = static_cast<int32_t>((bits >> (16 * (i - 4 * b))) & 0xffff) >= threshold;
            kept[i] = keep;
            out[i] = keep ? x[i] * scale : 0.0f;
        }
    }
}

void dropout_backward_f32(const float* grad, const uint8_t* kept, float* out, int64_t count, float scale, int threads) {
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (int64_t i = 0; i < count; ++i) out[i] = kept[i] ? grad[i] * scale : 0.0f;
}

void attention_forward_f32(const float* q, const float* kt, const float* vt, const float* allowed, float* out,
                           float* lse, int64_t heads, int64_t queries, int64_t keys, int64_t dim, int threads) {
    with_head_size(dim, [&](auto size) {
        forward<float, size.value>(q, kt, vt, allowed, out, lse, heads, queries, keys, dim, threads);
    });
}
void attention_forward_f64(const double* q, const double* kt, const double* vt, const double* allowed, double* out,
                           double* lse, int64_t heads, int64_t queries, int64_t keys, int64_t dim, int threads) {
    with_head_size(dim, [&](auto size) {
        forward<double, size.value>(q, kt, vt, allowed, out, lse, heads, queries, keys, dim, threads);
    });
}
void attention_backward_f32(const float* q, const float* kt, const float* vt, const float* allowed, const float* out,
                            const float* lse, const float* grad_out, float* grad_q, float* grad_kt, float* grad_vt,
                            int64_t heads, int64_t queries, int64_t keys, int64_t dim, int threads) {
    with_head_size(dim, [&](auto size) {
        backward<float, size.value>(q, kt, vt, allowed, out, lse, grad_out, grad_q, grad_kt, grad_vt, heads, queries,
                                    keys, dim, threads);
    });
}
void attention_backward_f64(const double* q, const double* kt, const double* vt, const double* allowed,
                            const double* out, const double* lse, const double* grad_out, double* grad_q,
                            double* grad_kt, double* grad_vt, int64_t heads, int64_t queries, int64_t keys,
                            int64_t dim, int threads) {
    with_head_size(dim, [&](auto size) {
        backward<double, size.value>(q, kt, vt, allowed, out, lse, grad_out, grad_q, grad_kt, grad_vt, heads, queries,
                                     keys, dim, threads);
    });
}
}
