// The non-matmul ops of the forward pass, with ggml's numerics (so logits match llama.cpp).
// All arrays are row-major float32 unless noted; callers validate shapes.
#pragma once

#include <cstdint>

#include "formats.h"

namespace phirt {

// y = x / sqrt(mean(x²) + eps) * w, per row of k.
void rms_norm(const float *x, const float *w, float eps, int64_t m, int64_t k, float *y);

// y = (x - mean) / sqrt(var + eps) * w + b, per row; w/b may be null (identity).
void layer_norm(const float *x, const float *w, const float *b, float eps, int64_t m, int64_t k,
                float *y);

// Rotary embedding in place on x (m, n_head, head_dim): the first n_rot dims of each head rotate
// by angle pos·base^(-2i/n_rot)·freq_scale/freq_factors[i]; cos/sin scaled by attn_factor.
// neox pairs (i, i + n_rot/2) (Phi, NeoX); otherwise adjacent pairs (2i, 2i+1) (Llama).
void rope(float *x, const int32_t *pos, int64_t m, int64_t n_head, int64_t head_dim, int64_t n_rot,
          float freq_base, float freq_scale, const float *freq_factors, float attn_factor,
          bool neox);

// Rotary embedding in place from precomputed tables, as ONNX Runtime's GroupQueryAttention and
// RotaryEmbedding apply their cos_cache / sin_cache: x (m, n_head, head_dim), the first n_rot dims
// of each head rotate by cos[pos[r], i], sin[pos[r], i] (tables (n_pos, n_rot / 2), row-major;
// callers check 0 <= pos < n_pos). Pairs as in rope(): (i, i + n_rot/2) when neox, else (2i, 2i+1).
// The tables already hold any scaling (LongRoPE factors, mscale); x0' = x0·c - x1·s,
// x1' = x0·s + x1·c in f32, as onnxruntime's reference kernel computes them.
void rope_cache(float *x, const int32_t *pos, int64_t m, int64_t n_head, int64_t head_dim,
                int64_t n_rot, const float *cos_table, const float *sin_table, bool neox);

// Row softmax in place.
void softmax(float *x, int64_t m, int64_t n);

// y (m, f) = silu(gate) * up, with gate/up rows of stride `in_stride` floats.
void silu_mul(const float *gate, const float *up, int64_t m, int64_t f, int64_t in_stride,
              float *y);

// Writes x (m, n_head, hd) f32 into cache (n_head, n_ctx, hd) f16 at positions [pos0, pos0 + m),
// rounding to nearest even as numpy's astype(float16) does.
void kv_store(const float *x, int64_t m, int64_t n_head, int64_t hd, ggml_half *cache,
              int64_t n_ctx, int64_t pos0);

// The same into a Q8_0 cache (n_head, n_ctx, hd / 32 blocks), quantized as activations are.
void kv_store_q8(const float *x, int64_t m, int64_t n_head, int64_t hd, block_q8_0 *cache,
                 int64_t n_ctx, int64_t pos0);

// GELU (tanh form) through ggml's f16 table: y = f16(gelu(f16(x))) for |x| < 10.
void gelu(const float *x, int64_t n, float *y);

// GELU (tanh form) in float32 without ggml's f16 table, as onnxruntime's Gelu(approximate="tanh")
// and FastGelu compute it: y = 0.5·x·(1 + tanh(sqrt(2/pi)·(x + 0.044715·x³))).
void gelu_tanh(const float *x, int64_t n, float *y);

// Causal attention over an f16 KV cache.
//   q (m, n_head, hd) f32; k_cache, v_cache (n_kv_head, n_ctx, hd) f16; out (m, n_head, hd).
//   Query i is at position pos0 + i and sees keys [max(0, p - window + 1), p] (window 0: all).
//   Scores are (f16(q) · k) * scale; softmax weights are rounded to f16 before · v, as ggml does.
void attention(const float *q, const ggml_half *k_cache, const ggml_half *v_cache, int64_t m,
               int64_t n_head, int64_t n_kv_head, int64_t hd, int64_t n_ctx, int64_t pos0,
               float scale, int64_t window, float *out);

// attention() over a Q8_0 cache (n_kv_head, n_ctx, hd / 32 blocks; hd a multiple of 32), with
// llama.cpp's flash-attention numerics for that cache (attn_q8.h): q quantized to Q8_0, integer
// block dots, f32 softmax weights, the division by their sum last.
void attention_q8(const float *q, const block_q8_0 *k_cache, const block_q8_0 *v_cache, int64_t m,
                  int64_t n_head, int64_t n_kv_head, int64_t hd, int64_t n_ctx, int64_t pos0,
                  float scale, int64_t window, float *out);

// One sequence in attention_spans(): its rows [row0, row0 + rows) of q, k, v sit at positions
// pos0.. of its own cache (this layer's k and v: f16 or Q8_0 rows as attention() and
// attention_q8() take them, n_ctx positions).
struct AttnSpan {
    void *k_cache, *v_cache;
    int64_t n_ctx, row0, rows, pos0;
};

// Several sequences' rows in one call (the server's batched decode): stores each span's k, v
// (rows, n_kv_head, hd) into its cache, then runs every (row, head) of every span on the pool at
// once, each exactly as attention() / attention_q8() computes it for that sequence alone.
// spans are in row order and cover q's rows; n_spans >= 1.
void attention_spans(const float *q, const float *k, const float *v, const AttnSpan *spans,
                     int64_t n_spans, bool q8, int64_t n_head, int64_t n_kv_head, int64_t hd,
                     float scale, int64_t window, float *out);

// attention() over an f32 cache, with onnxruntime's GroupQueryAttention numerics (f32 KV cache,
// f32 scores scale·(q·k), f32 softmax, f32 weighted sum of values), for ONNX models whose numbers
// should be the folder's own. The keys are stored transposed, k_cache_t (n_kv_head, hd, n_ctx),
// v_cache (n_kv_head, n_ctx, hd), so both products run along contiguous memory key by key (scores
// for all keys one dimension at a time, values one key at a time) with no reassociated sums: the
// compiler's vector code gives the scalar loop's results exactly.
void attention_f32(const float *q, const float *k_cache_t, const float *v_cache, int64_t m,
                   int64_t n_head, int64_t n_kv_head, int64_t hd, int64_t n_ctx, int64_t pos0,
                   float scale, int64_t window, float *out);

}  // namespace phirt
