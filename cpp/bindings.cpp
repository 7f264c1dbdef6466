// phirt._kernels' kernel entry points (bind_gguf.cpp adds the GGUF header helper). Every entry
// point validates dtype, shape, contiguity and buffer size before any kernel reads memory, and
// releases the GIL while it runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dispatch.h"
#include "matmul.h"
#include "nbits.h"
#include "ops.h"
#include "quants.h"
#include "threadpool.h"

namespace py = pybind11;
using namespace phirt;

namespace phirt {
void bind_gguf(py::module_ &mod);  // bind_gguf.cpp
bool install_sigbus_note();        // sigbus_note.cpp
}  // namespace phirt

namespace {

// ---- argument checks -------------------------------------------------------------------------

template <typename T>
const char *dtype_name();
template <>
const char *dtype_name<float>() {
    return "float32";
}
template <>
const char *dtype_name<int32_t>() {
    return "int32";
}
template <>
const char *dtype_name<uint8_t>() {
    return "uint8";
}
template <>
const char *dtype_name<uint16_t>() {
    return "float16";
}

// An array of exactly dtype T, C-contiguous, with `ndim` dimensions (-1: any).
template <typename T>
py::array checked(const py::handle &obj, const char *what, int ndim, bool writable = false) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(what) + " must be a numpy array");
    auto arr = py::reinterpret_borrow<py::array>(obj);
    const bool is_f16 = std::is_same<T, uint16_t>::value;
    const bool dtype_ok =
        is_f16 ? arr.dtype().is(py::dtype("float16")) : arr.dtype().is(py::dtype::of<T>());
    if (!dtype_ok)
        throw py::type_error(std::string(what) + " must have dtype " + dtype_name<T>() + ", got " +
                             std::string(py::str(arr.dtype())));
    if (!(arr.flags() & py::array::c_style))
        throw py::value_error(std::string(what) + " must be C-contiguous");
    if (ndim >= 0 && arr.ndim() != ndim)
        throw py::value_error(std::string(what) + " must be " + std::to_string(ndim) + "-D, got " +
                              std::to_string(arr.ndim()) + "-D");
    if (writable && !arr.writeable())
        throw py::value_error(std::string(what) + " must be writable");
    return arr;
}

std::string shape_str(const py::array &a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

void expect_shape(const py::array &a, const char *what, std::initializer_list<py::ssize_t> dims) {
    bool ok = (py::ssize_t)dims.size() == a.ndim();
    py::ssize_t i = 0;
    std::string want = "(";
    for (auto d : dims) {
        if (ok && a.shape(i) != d) ok = false;
        want += (i ? ", " : "") + std::to_string(d);
        ++i;
    }
    want += dims.size() == 1 ? ",)" : ")";
    if (!ok)
        throw py::value_error(std::string(what) + " must have shape " + want + ", got " +
                              shape_str(a));
}

const TypeTraits &traits_or_throw(int type) {
    const TypeTraits *t = type_traits(type);
    if (t == nullptr) throw py::value_error("unsupported GGML type id " + std::to_string(type));
    return *t;
}

// Bytes of one row of k values of type t, or a ValueError naming the block size.
int64_t row_bytes_or_throw(const TypeTraits &t, int64_t k) {
    const int64_t rb = row_bytes(t, k);
    if (rb < 0)
        throw py::value_error(std::string(t.name) + " needs k to be a positive multiple of " +
                              std::to_string(t.block_size) + ", got k=" + std::to_string(k));
    return rb;
}

// Output array: the caller's (checked) or a new one.
py::array_t<float> out_or_new(const py::object &out, std::initializer_list<py::ssize_t> dims) {
    if (out.is_none()) return py::array_t<float>(std::vector<py::ssize_t>(dims));
    auto arr = checked<float>(out, "out", (int)dims.size(), true);
    expect_shape(arr, "out", dims);
    return py::reinterpret_borrow<py::array_t<float>>(arr);
}

// y (m × n) = x (m × k) · Wᵀ for any weight holder: checks x against k (K_name: how the matrix
// names it), fills `out` or a new array, and runs run(x, m, y) without the GIL.
template <class Run>
py::array_t<float> matmul_into(int64_t n, int64_t k, const char *k_name, const py::object &x_obj,
                               const py::object &out, Run &&run) {
    auto x = checked<float>(x_obj, "x", 2);
    if (x.shape(1) != k)
        throw py::value_error("x has " + std::to_string(x.shape(1)) + " columns, weight has " +
                              k_name + "=" + std::to_string(k));
    const int64_t m = x.shape(0);
    auto y = out_or_new(out, {m, n});
    if (m == 0) return y;
    const float *xp = static_cast<const float *>(x.data());
    float *yp = y.mutable_data();
    py::gil_scoped_release release;
    run(xp, m, yp);
    return y;
}

// ---- QMatrix ---------------------------------------------------------------------------------

// A weight matrix in a GGML format over a buffer it keeps alive (often a read-only memmap).
class QMatrix {
   public:
    QMatrix(const py::buffer &data, int type, int64_t n, int64_t k)
        : owner_(data), info_(std::make_unique<py::buffer_info>(data.request())) {
        // info_ holds the buffer export for our lifetime, so the exporter (bytearray, mmap,
        // numpy) cannot resize or free the memory under us.
        if (!PyBuffer_IsContiguous(info_->view(), 'C'))
            throw py::value_error("weight buffer must be C-contiguous");
        const int64_t nbytes = (int64_t)info_->size * (int64_t)info_->itemsize;
        const std::string problem = validate_weight(type, n, k, nbytes);
        if (!problem.empty()) throw py::value_error(problem);
        view_ = {static_cast<const uint8_t *>(info_->ptr), type, n, k,
                 row_bytes(*type_traits(type), k)};
    }
    const WeightView &view() const { return view_; }
    int64_t n() const { return view_.n; }
    int64_t k() const { return view_.k; }
    int type() const { return view_.type; }
    int64_t nbytes() const { return view_.row_bytes * view_.n; }

   private:
    py::object owner_;
    std::unique_ptr<py::buffer_info> info_;
    WeightView view_{};
};

py::array_t<float> matmul_py(const QMatrix &w, const py::object &x_obj, const py::object &out,
                             bool batch_invariant) {
    if (!matmul_supported(w.type()))
        throw py::value_error(std::string("matmul does not support ") +
                              type_traits(w.type())->name);
    return matmul_into(w.n(), w.k(), "k", x_obj, out, [&](const float *x, int64_t m, float *y) {
        matmul(w.view(), x, m, y, batch_invariant);
    });
}

std::unique_ptr<Q4x16Matrix> q4x16_repack_py(const QMatrix &w) {
    if (w.type() != (int)GgmlType::Q4_0)
        throw py::value_error(std::string("the interleaved layout holds Q4_0 weights, not ") +
                              type_traits(w.type())->name);
    const WeightView v = w.view();
    py::gil_scoped_release release;
    return std::make_unique<Q4x16Matrix>(v.data, v.row_bytes, v.n, v.k);
}

py::array_t<float> q4x16_matmul_py(const Q4x16Matrix &w, const py::object &x_obj,
                                   const py::object &out, bool /*batch_invariant: always*/) {
    return matmul_into(w.n(), w.k(), "k", x_obj, out,
                       [&](const float *x, int64_t m, float *y) { matmul_q4x16(w, x, m, y); });
}

py::array_t<float> get_rows_py(const QMatrix &w, const py::object &ids_obj) {
    auto ids = checked<int32_t>(ids_obj, "ids", 1);
    const int32_t *ip = static_cast<const int32_t *>(ids.data());
    for (py::ssize_t i = 0; i < ids.shape(0); ++i)
        if (ip[i] < 0 || ip[i] >= w.n())
            throw py::value_error("token id " + std::to_string(ip[i]) + " out of range [0, " +
                                  std::to_string(w.n()) + ")");
    py::array_t<float> out({(py::ssize_t)ids.shape(0), (py::ssize_t)w.k()});
    float *op = out.mutable_data();
    const int64_t t = ids.shape(0);
    py::gil_scoped_release release;
    get_rows(w.view(), ip, t, op);
    return out;
}

// ---- quantize / dequantize ---------------------------------------------------------------------

py::array_t<uint8_t> quantize_py(int type, const py::object &x_obj) {
    const TypeTraits &t = traits_or_throw(type);
    auto x = checked<float>(x_obj, "x", -1);
    if (x.ndim() < 1) throw py::value_error("x must have at least one dimension");
    const int64_t k = x.shape(x.ndim() - 1);
    const int64_t rb = row_bytes_or_throw(t, k);
    const int64_t rows = x.size() / k;
    std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
    shape.back() = rb;
    py::array_t<uint8_t> out(shape);
    if (rows == 0) return out;
    const float *xp = static_cast<const float *>(x.data());
    uint8_t *op = out.mutable_data();
    {
        // Probe support on one block before releasing the GIL.
        std::vector<uint8_t> probe(t.type_size);
        std::vector<float> zero(t.block_size, 0.0f);
        if (!quantize_row(type, zero.data(), probe.data(), t.block_size))
            throw py::value_error(std::string("quantize to ") + t.name + " is not supported");
    }
    py::gil_scoped_release release;
    global_pool().run(rows,
                      [&](int64_t r, int) { quantize_row(type, xp + r * k, op + r * rb, k); });
    return out;
}

py::array_t<float> dequantize_py(int type, const py::object &data_obj, int64_t k) {
    const TypeTraits &t = traits_or_throw(type);
    auto data = checked<uint8_t>(data_obj, "data", -1);
    const int64_t rb = row_bytes_or_throw(t, k);
    const int64_t nbytes = data.size();
    if (nbytes % rb != 0)
        throw py::value_error("data holds " + std::to_string(nbytes) +
                              " bytes, not a whole number of " + t.name + " rows of " +
                              std::to_string(rb) + " bytes");
    const int64_t rows = nbytes / rb;
    {
        // Probe support on one block.
        std::vector<float> probe(t.block_size);
        std::vector<uint8_t> zero(t.type_size, 0);
        if (!dequantize_row(type, zero.data(), probe.data(), t.block_size))
            throw py::value_error(std::string("dequantize from ") + t.name + " is not supported");
    }
    py::array_t<float> out({(py::ssize_t)rows, (py::ssize_t)k});
    const uint8_t *dp = static_cast<const uint8_t *>(data.data());
    float *op = out.mutable_data();
    py::gil_scoped_release release;
    global_pool().run(rows,
                      [&](int64_t r, int) { dequantize_row(type, dp + r * rb, op + r * k, k); });
    return out;
}

// ---- ops ---------------------------------------------------------------------------------------

py::array_t<float> rms_norm_py(const py::object &x_obj, const py::object &w_obj, float eps,
                               const py::object &out) {
    auto x = checked<float>(x_obj, "x", 2);
    auto w = checked<float>(w_obj, "weight", 1);
    const int64_t m = x.shape(0), k = x.shape(1);
    expect_shape(w, "weight", {k});
    auto y = out_or_new(out, {m, k});
    const float *xp = static_cast<const float *>(x.data()),
                *wp = static_cast<const float *>(w.data());
    float *yp = y.mutable_data();
    py::gil_scoped_release release;
    rms_norm(xp, wp, eps, m, k, yp);
    return y;
}

py::array_t<float> layer_norm_py(const py::object &x_obj, const py::object &w_obj,
                                 const py::object &b_obj, float eps) {
    auto x = checked<float>(x_obj, "x", 2);
    const int64_t m = x.shape(0), k = x.shape(1);
    const float *wp = nullptr, *bp = nullptr;
    py::array w, b;
    if (!w_obj.is_none()) {
        w = checked<float>(w_obj, "weight", 1);
        expect_shape(w, "weight", {k});
        wp = static_cast<const float *>(w.data());
    }
    if (!b_obj.is_none()) {
        b = checked<float>(b_obj, "bias", 1);
        expect_shape(b, "bias", {k});
        bp = static_cast<const float *>(b.data());
    }
    py::array_t<float> y({(py::ssize_t)m, (py::ssize_t)k});
    const float *xp = static_cast<const float *>(x.data());
    float *yp = y.mutable_data();
    py::gil_scoped_release release;
    layer_norm(xp, wp, bp, eps, m, k, yp);
    return y;
}

void rope_py(const py::object &x_obj, const py::object &pos_obj, int64_t n_rot, float freq_base,
             bool neox, const py::object &ff_obj, float freq_scale, float attn_factor) {
    auto x = checked<float>(x_obj, "x", 3, true);
    auto pos = checked<int32_t>(pos_obj, "positions", 1);
    const int64_t m = x.shape(0), n_head = x.shape(1), hd = x.shape(2);
    expect_shape(pos, "positions", {m});
    if (n_rot <= 0 || n_rot > hd || n_rot % 2 != 0)
        throw py::value_error("n_rot must be even and in [2, head_dim=" + std::to_string(hd) +
                              "], got " + std::to_string(n_rot));
    if (!(freq_base > 0.0f) || !std::isfinite(freq_base))
        throw py::value_error("freq_base must be positive");
    const float *ffp = nullptr;
    py::array ff;
    if (!ff_obj.is_none()) {
        ff = checked<float>(ff_obj, "freq_factors", 1);
        expect_shape(ff, "freq_factors", {n_rot / 2});
        ffp = static_cast<const float *>(ff.data());
    }
    float *xp = static_cast<float *>(x.mutable_data());
    const int32_t *pp = static_cast<const int32_t *>(pos.data());
    py::gil_scoped_release release;
    rope(xp, pp, m, n_head, hd, n_rot, freq_base, freq_scale, ffp, attn_factor, neox);
}

void rope_cache_py(const py::object &x_obj, const py::object &pos_obj, const py::object &cos_obj,
                   const py::object &sin_obj, int64_t n_rot, bool neox) {
    auto x = checked<float>(x_obj, "x", 3, true);
    auto pos = checked<int32_t>(pos_obj, "positions", 1);
    auto cos_t = checked<float>(cos_obj, "cos", 2);
    auto sin_t = checked<float>(sin_obj, "sin", 2);
    const int64_t m = x.shape(0), n_head = x.shape(1), hd = x.shape(2);
    expect_shape(pos, "positions", {m});
    if (n_rot <= 0 || n_rot > hd || n_rot % 2 != 0)
        throw py::value_error("n_rot must be even and in [2, head_dim=" + std::to_string(hd) +
                              "], got " + std::to_string(n_rot));
    const int64_t n_pos = cos_t.shape(0);
    expect_shape(cos_t, "cos", {n_pos, n_rot / 2});
    expect_shape(sin_t, "sin", {n_pos, n_rot / 2});
    const int32_t *pp = static_cast<const int32_t *>(pos.data());
    for (int64_t r = 0; r < m; ++r)
        if (pp[r] < 0 || pp[r] >= n_pos)
            throw py::value_error("position " + std::to_string(pp[r]) +
                                  " is outside the rotary tables [0, " + std::to_string(n_pos) +
                                  ")");
    float *xp = static_cast<float *>(x.mutable_data());
    const float *cp = static_cast<const float *>(cos_t.data());
    const float *sp = static_cast<const float *>(sin_t.data());
    py::gil_scoped_release release;
    rope_cache(xp, pp, m, n_head, hd, n_rot, cp, sp, neox);
}

void softmax_py(const py::object &x_obj) {
    auto x = checked<float>(x_obj, "x", 2, true);
    float *xp = static_cast<float *>(x.mutable_data());
    const int64_t m = x.shape(0), n = x.shape(1);
    py::gil_scoped_release release;
    softmax(xp, m, n);
}

py::array_t<float> swiglu_py(const py::object &x_obj) {
    auto x = checked<float>(x_obj, "x", 2);
    const int64_t m = x.shape(0), two_f = x.shape(1);
    if (two_f % 2 != 0)
        throw py::value_error("swiglu input width must be even, got " + std::to_string(two_f));
    const int64_t f = two_f / 2;
    py::array_t<float> y({(py::ssize_t)m, (py::ssize_t)f});
    const float *xp = static_cast<const float *>(x.data());
    float *yp = y.mutable_data();
    py::gil_scoped_release release;
    silu_mul(xp, xp + f, m, f, two_f, yp);
    return y;
}

py::array_t<float> silu_mul_py(const py::object &g_obj, const py::object &u_obj) {
    auto g = checked<float>(g_obj, "gate", 2);
    auto u = checked<float>(u_obj, "up", 2);
    const int64_t m = g.shape(0), f = g.shape(1);
    expect_shape(u, "up", {m, f});
    py::array_t<float> y({(py::ssize_t)m, (py::ssize_t)f});
    const float *gp = static_cast<const float *>(g.data()),
                *up = static_cast<const float *>(u.data());
    float *yp = y.mutable_data();
    py::gil_scoped_release release;
    silu_mul(gp, up, m, f, f, yp);
    return y;
}

py::array_t<float> gelu_py(const py::object &x_obj) {
    auto x = checked<float>(x_obj, "x", -1);
    std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
    py::array_t<float> y(shape);
    const float *xp = static_cast<const float *>(x.data());
    float *yp = y.mutable_data();
    const int64_t n = x.size();
    py::gil_scoped_release release;
    gelu(xp, n, yp);
    return y;
}

py::array_t<float> gelu_tanh_py(const py::object &x_obj) {
    auto x = checked<float>(x_obj, "x", -1);
    std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
    py::array_t<float> y(shape);
    const float *xp = static_cast<const float *>(x.data());
    float *yp = y.mutable_data();
    const int64_t n = x.size();
    py::gil_scoped_release release;
    gelu_tanh(xp, n, yp);
    return y;
}

// A uint8 cache holds Q8_0 rows (attn_q8.h): hd / 32 blocks of 34 bytes; float16 holds hd values.
bool is_q8_cache(const py::handle &obj) {
    return py::isinstance<py::array>(obj) &&
           py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<uint8_t>());
}

int64_t cache_row_bytes(bool q8, int64_t hd, const char *what) {
    if (!q8) return hd;
    if (hd % QK8_0 != 0)
        throw py::value_error(std::string(what) +
                              ": a Q8_0 cache needs head_dim to be a multiple " + "of 32, got " +
                              std::to_string(hd));
    return hd / QK8_0 * (int64_t)sizeof(block_q8_0);
}

py::array_t<float> attention_py(const py::object &q_obj, const py::object &k_obj,
                                const py::object &v_obj, int64_t pos0, float scale,
                                int64_t window) {
    auto q = checked<float>(q_obj, "q", 3);
    const bool q8 = is_q8_cache(k_obj);
    auto kc = q8 ? checked<uint8_t>(k_obj, "k_cache", 3) : checked<uint16_t>(k_obj, "k_cache", 3);
    auto vc = q8 ? checked<uint8_t>(v_obj, "v_cache", 3) : checked<uint16_t>(v_obj, "v_cache", 3);
    const int64_t m = q.shape(0), n_head = q.shape(1), hd = q.shape(2);
    const int64_t n_kv_head = kc.shape(0), n_ctx = kc.shape(1);
    const int64_t row = cache_row_bytes(q8, hd, "attention");
    expect_shape(kc, "k_cache", {n_kv_head, n_ctx, row});
    expect_shape(vc, "v_cache", {n_kv_head, n_ctx, row});
    if (n_kv_head <= 0 || n_head % n_kv_head != 0)
        throw py::value_error("n_head=" + std::to_string(n_head) +
                              " is not a multiple of n_kv_head=" + std::to_string(n_kv_head));
    if (pos0 < 0 || m > n_ctx || pos0 > n_ctx - m)
        throw py::value_error(std::to_string(m) + " queries at position " + std::to_string(pos0) +
                              " do not fit the cache of " + std::to_string(n_ctx));
    if (window < 0) throw py::value_error("window must be >= 0");
    py::array_t<float> out({(py::ssize_t)m, (py::ssize_t)n_head, (py::ssize_t)hd});
    if (m == 0) return out;
    const float *qp = static_cast<const float *>(q.data());
    float *op = out.mutable_data();
    py::gil_scoped_release release;
    if (q8)
        attention_q8(qp, static_cast<const block_q8_0 *>(kc.data()),
                     static_cast<const block_q8_0 *>(vc.data()), m, n_head, n_kv_head, hd, n_ctx,
                     pos0, scale, window, op);
    else
        attention(qp, static_cast<const ggml_half *>(kc.data()),
                  static_cast<const ggml_half *>(vc.data()), m, n_head, n_kv_head, hd, n_ctx, pos0,
                  scale, window, op);
    return out;
}

py::array_t<float> attention_spans_py(const py::object &q_obj, const py::object &k_obj,
                                      const py::object &v_obj, const py::list &k_caches,
                                      const py::list &v_caches, const std::vector<int64_t> &bounds,
                                      const std::vector<int64_t> &pos0s, float scale,
                                      int64_t window) {
    auto q = checked<float>(q_obj, "q", 3);
    auto k = checked<float>(k_obj, "k", 3);
    auto v = checked<float>(v_obj, "v", 3);
    const int64_t m = q.shape(0), n_head = q.shape(1), hd = q.shape(2);
    const int64_t n_kv_head = k.shape(1), n_spans = (int64_t)pos0s.size();
    expect_shape(k, "k", {m, n_kv_head, hd});
    expect_shape(v, "v", {m, n_kv_head, hd});
    if (n_kv_head <= 0 || n_head % n_kv_head != 0)
        throw py::value_error("n_head=" + std::to_string(n_head) +
                              " is not a multiple of n_kv_head=" + std::to_string(n_kv_head));
    if (window < 0) throw py::value_error("window must be >= 0");
    if (n_spans < 1 || (int64_t)k_caches.size() != n_spans || (int64_t)v_caches.size() != n_spans ||
        (int64_t)bounds.size() != n_spans + 1)
        throw py::value_error(
            "attention_spans needs n >= 1 spans: n k_caches, n v_caches, n pos0s "
            "and n + 1 bounds");
    if (bounds.front() != 0 || bounds.back() != m)
        throw py::value_error("bounds must run from 0 to the number of rows of q (" +
                              std::to_string(m) + ")");
    const bool q8 = is_q8_cache(k_caches[0]);
    const int64_t row = cache_row_bytes(q8, hd, "attention_spans");
    std::vector<py::array> keep;  // the caches stay referenced while the GIL is released
    std::vector<AttnSpan> spans(n_spans);
    for (int64_t s = 0; s < n_spans; ++s) {
        const std::string name = "span " + std::to_string(s);
        if (bounds[s + 1] <= bounds[s])
            throw py::value_error("bounds must increase: " + name + " has no rows");
        py::array kc = q8 ? checked<uint8_t>(k_caches[s], "k_cache", 3, true)
                          : checked<uint16_t>(k_caches[s], "k_cache", 3, true);
        py::array vc = q8 ? checked<uint8_t>(v_caches[s], "v_cache", 3, true)
                          : checked<uint16_t>(v_caches[s], "v_cache", 3, true);
        const int64_t n_ctx = kc.shape(1), rows = bounds[s + 1] - bounds[s];
        expect_shape(kc, "k_cache", {n_kv_head, n_ctx, row});
        expect_shape(vc, "v_cache", {n_kv_head, n_ctx, row});
        if (pos0s[s] < 0 || rows > n_ctx || pos0s[s] > n_ctx - rows)
            throw py::value_error(name + ": " + std::to_string(rows) + " queries at position " +
                                  std::to_string(pos0s[s]) + " do not fit the cache of " +
                                  std::to_string(n_ctx));
        spans[s] = {kc.mutable_data(), vc.mutable_data(), n_ctx, bounds[s], rows, pos0s[s]};
        keep.push_back(kc);
        keep.push_back(vc);
    }
    py::array_t<float> out({(py::ssize_t)m, (py::ssize_t)n_head, (py::ssize_t)hd});
    const float *qp = static_cast<const float *>(q.data());
    const float *kp = static_cast<const float *>(k.data());
    const float *vp = static_cast<const float *>(v.data());
    float *op = out.mutable_data();
    py::gil_scoped_release release;
    attention_spans(qp, kp, vp, spans.data(), n_spans, q8, n_head, n_kv_head, hd, scale, window,
                    op);
    return out;
}

py::array_t<float> attention_f32_py(const py::object &q_obj, const py::object &k_obj,
                                    const py::object &v_obj, int64_t pos0, float scale,
                                    int64_t window) {
    auto q = checked<float>(q_obj, "q", 3);
    auto kc = checked<float>(k_obj, "k_cache_t", 3);
    auto vc = checked<float>(v_obj, "v_cache", 3);
    const int64_t m = q.shape(0), n_head = q.shape(1), hd = q.shape(2);
    const int64_t n_kv_head = kc.shape(0), n_ctx = kc.shape(2);
    expect_shape(kc, "k_cache_t", {n_kv_head, hd, n_ctx});
    expect_shape(vc, "v_cache", {n_kv_head, n_ctx, hd});
    if (n_kv_head <= 0 || n_head % n_kv_head != 0)
        throw py::value_error("n_head=" + std::to_string(n_head) +
                              " is not a multiple of n_kv_head=" + std::to_string(n_kv_head));
    if (pos0 < 0 || m > n_ctx || pos0 > n_ctx - m)
        throw py::value_error(std::to_string(m) + " queries at position " + std::to_string(pos0) +
                              " do not fit the cache of " + std::to_string(n_ctx));
    if (window < 0) throw py::value_error("window must be >= 0");
    py::array_t<float> out({(py::ssize_t)m, (py::ssize_t)n_head, (py::ssize_t)hd});
    if (m == 0) return out;
    const float *qp = static_cast<const float *>(q.data());
    float *op = out.mutable_data();
    py::gil_scoped_release release;
    attention_f32(qp, static_cast<const float *>(kc.data()), static_cast<const float *>(vc.data()),
                  m, n_head, n_kv_head, hd, n_ctx, pos0, scale, window, op);
    return out;
}

void kv_store_py(const py::object &cache_obj, const py::object &x_obj, int64_t pos0) {
    const bool q8 = is_q8_cache(cache_obj);
    auto cache = q8 ? checked<uint8_t>(cache_obj, "cache", 3, true)
                    : checked<uint16_t>(cache_obj, "cache", 3, true);
    auto x = checked<float>(x_obj, "x", 3);
    const int64_t m = x.shape(0), n_head = x.shape(1), hd = x.shape(2);
    const int64_t n_ctx = cache.shape(1);
    expect_shape(cache, "cache", {n_head, n_ctx, cache_row_bytes(q8, hd, "kv_store")});
    if (pos0 < 0 || m > n_ctx || pos0 > n_ctx - m)
        throw py::value_error(std::to_string(m) + " rows at position " + std::to_string(pos0) +
                              " do not fit the cache of " + std::to_string(n_ctx));
    if (m == 0) return;
    const float *xp = static_cast<const float *>(x.data());
    void *cp = cache.mutable_data();
    py::gil_scoped_release release;
    if (q8)
        kv_store_q8(xp, m, n_head, hd, static_cast<block_q8_0 *>(cp), n_ctx, pos0);
    else
        kv_store(xp, m, n_head, hd, static_cast<ggml_half *>(cp), n_ctx, pos0);
}

// ---- ONNX MatMulNBits ------------------------------------------------------------------------
// com.microsoft MatMulNBits (bits = 4 or 8), repacked at load time; layout and numerics in
// nbits.h. Every ONNX size is checked against the attributes before a byte is read.

// A 1-D (rows * cols,) or 2-D (rows, cols) array: ORT exports use both for scales, zero points.
void expect_rows_cols(const py::array &a, const char *what, int64_t rows, int64_t cols) {
    const bool ok = (a.ndim() == 1 && a.shape(0) == rows * cols) ||
                    (a.ndim() == 2 && a.shape(0) == rows && a.shape(1) == cols);
    if (!ok)
        throw py::value_error(std::string(what) + " must have shape (" +
                              std::to_string(rows * cols) + ",) or (" + std::to_string(rows) +
                              ", " + std::to_string(cols) + "), got " + shape_str(a));
}

std::unique_ptr<NBitsMatrix> nbits_repack_py(const py::object &b_obj, const py::object &scales_obj,
                                             const py::object &zp_obj, int64_t k,
                                             int64_t block_size, int64_t bits,
                                             int64_t accuracy_level) {
    auto b = checked<uint8_t>(b_obj, "B", 3);
    const int64_t n = b.shape(0);
    const std::string problem = nbits_validate(n, k, block_size, bits, accuracy_level);
    if (!problem.empty()) throw py::value_error("MatMulNBits: " + problem);
    const NBitsShape s =
        nbits_shape(n, k, (int)block_size, (int)bits, (int)accuracy_level, !zp_obj.is_none());
    const int64_t blob = block_size * bits / 8;
    if (b.shape(1) != s.onnx_blocks || b.shape(2) != blob)
        throw py::value_error(
            "B must have shape (N, ceil(K / block_size), block_size * bits / 8) = (" +
            std::to_string(n) + ", " + std::to_string(s.onnx_blocks) + ", " + std::to_string(blob) +
            ") for K=" + std::to_string(k) + ", block_size=" + std::to_string(block_size) +
            ", bits=" + std::to_string(bits) + ", got " + shape_str(b));

    if (!py::isinstance<py::array>(scales_obj))
        throw py::type_error("scales must be a numpy array");
    const py::dtype sdt = py::reinterpret_borrow<py::array>(scales_obj).dtype();
    const bool f16 = sdt.is(py::dtype("float16"));
    if (!f16 && !sdt.is(py::dtype::of<float>()))
        throw py::type_error("scales must have dtype float32 or float16, got " +
                             std::string(py::str(sdt)));
    py::array scales = f16 ? checked<uint16_t>(scales_obj, "scales", -1)
                           : checked<float>(scales_obj, "scales", -1);
    expect_rows_cols(scales, "scales", n, s.onnx_blocks);

    py::array zp;
    if (!zp_obj.is_none()) {
        if (py::isinstance<py::array>(zp_obj) &&
            !py::reinterpret_borrow<py::array>(zp_obj).dtype().is(py::dtype::of<uint8_t>()))
            throw py::type_error(
                std::string("zero_points must be uint8 (") +
                (bits == 4 ? "two 4-bit zero points per byte" : "one per byte") + "), got " +
                std::string(py::str(py::reinterpret_borrow<py::array>(zp_obj).dtype())));
        zp = checked<uint8_t>(zp_obj, "zero_points", -1);
        expect_rows_cols(zp, "zero_points", n, (s.onnx_blocks * bits + 7) / 8);
    }

    auto mat = std::make_unique<NBitsMatrix>(s);
    const MatMulNBitsSource src{
        static_cast<const uint8_t *>(b.data()), scales.data(), f16,
        zp_obj.is_none() ? nullptr : static_cast<const uint8_t *>(zp.data())};
    py::gil_scoped_release release;
    repack_matmulnbits(src, mat.get());
    return mat;
}

py::array_t<float> nbits_dequantize_py(const NBitsMatrix &w) {
    py::array_t<float> out({(py::ssize_t)w.shape().n, (py::ssize_t)w.shape().k});
    float *op = out.mutable_data();
    py::gil_scoped_release release;
    nbits_dequantize(w, op);
    return out;
}

py::array_t<float> nbits_matmul_py(const NBitsMatrix &w, const py::object &x_obj,
                                   const py::object &out, bool batch_invariant) {
    return matmul_into(
        w.shape().n, w.shape().k, "K", x_obj, out,
        [&](const float *x, int64_t m, float *y) { nbits_matmul(w, x, m, y, batch_invariant); });
}

// The level-4 activation quantizer of the active ISA on its own (tests hold it to onnxruntime's):
// x (m, K) -> codes int8 (m, n_blocks · block_size) and scales float32 (m, n_blocks).
py::tuple nbits_quantize_activations_py(const py::object &x_obj, int64_t block_size) {
    auto x = checked<float>(x_obj, "x", 2);
    const int64_t m = x.shape(0), k = x.shape(1);
    const std::string problem = nbits_validate(1, k, block_size, 4, 4);
    if (!problem.empty()) throw py::value_error("MatMulNBits: " + problem);
    const NBitsShape s = nbits_shape(1, k, (int)block_size, 4, 4, false);
    const int64_t width = s.onnx_blocks * block_size;
    py::array_t<int8_t> q({(py::ssize_t)m, (py::ssize_t)width});
    py::array_t<float> d({(py::ssize_t)m, (py::ssize_t)s.onnx_blocks});
    const float *xp = static_cast<const float *>(x.data());
    int8_t *qp = q.mutable_data();
    float *dp = d.mutable_data();
    {
        py::gil_scoped_release release;
        const NBitsKernels &kern = active_kernels().nbits;
        std::vector<float> pad(s.kq), rd(s.nb), rs(s.nb);
        std::vector<int8_t> rq(s.kq);
        for (int64_t i = 0; i < m; ++i) {
            std::copy(xp + i * k, xp + (i + 1) * k, pad.begin());
            std::fill(pad.begin() + k, pad.end(), 0.0f);
            kern.quantize(s, pad.data(), rq.data(), rd.data(), rs.data());
            std::copy(rq.begin(), rq.begin() + width, qp + i * width);
            std::copy(rd.begin(), rd.begin() + s.onnx_blocks, dp + i * s.onnx_blocks);
        }
    }
    return py::make_tuple(q, d);
}

// The exporter's quantizer: x (rows, K) float32 -> (B, scales) in ONNX MatMulNBits layout.
py::tuple nbits_quantize_py(const py::object &x_obj, int64_t block_size, int64_t bits,
                            bool search) {
    auto x = checked<float>(x_obj, "x", 2);
    const int64_t rows = x.shape(0), k = x.shape(1);
    const std::string problem = nbits_validate(std::max<int64_t>(rows, 1), k, block_size, bits, 0);
    if (!problem.empty()) throw py::value_error("MatMulNBits: " + problem);
    const int64_t nb = (k + block_size - 1) / block_size, blob = block_size * bits / 8;
    py::array_t<uint8_t> b({(py::ssize_t)rows, (py::ssize_t)nb, (py::ssize_t)blob});
    py::array_t<float> scales({(py::ssize_t)rows, (py::ssize_t)nb});
    const float *xp = static_cast<const float *>(x.data());
    uint8_t *bp = b.mutable_data();
    float *sp = scales.mutable_data();
    {
        py::gil_scoped_release release;
        nbits_quantize_rows(xp, rows, k, (int)block_size, (int)bits, search, bp, sp);
    }
    return py::make_tuple(b, scales);
}

void bind_nbits(py::module_ &mod) {
    py::class_<NBitsMatrix>(mod, "NBitsMatrix",
                            "ONNX MatMulNBits weights (N x K, 4 or 8 bits), repacked losslessly by "
                            "nbits_repack; carries the node's accuracy_level.")
        .def_property_readonly("n", [](const NBitsMatrix &w) { return w.shape().n; })
        .def_property_readonly("k", [](const NBitsMatrix &w) { return w.shape().k; })
        .def_property_readonly("block_size",
                               [](const NBitsMatrix &w) { return w.shape().block_size; })
        .def_property_readonly("bits", [](const NBitsMatrix &w) { return w.shape().bits; })
        .def_property_readonly("accuracy_level",
                               [](const NBitsMatrix &w) { return w.shape().accuracy_level; })
        .def_property_readonly("has_zero_points",
                               [](const NBitsMatrix &w) { return w.shape().has_zero_points; })
        .def_property_readonly("nbytes", &NBitsMatrix::nbytes)
        .def("__repr__", [](const NBitsMatrix &w) {
            const NBitsShape &s = w.shape();
            return "NBitsMatrix(n=" + std::to_string(s.n) + ", k=" + std::to_string(s.k) +
                   ", bits=" + std::to_string(s.bits) +
                   ", block_size=" + std::to_string(s.block_size) +
                   ", accuracy_level=" + std::to_string(s.accuracy_level) +
                   (s.has_zero_points ? ", zero_points)" : ")");
        });
    mod.def("nbits_repack", &nbits_repack_py, py::arg("B"), py::arg("scales"),
            py::arg("zero_points"), py::arg("K"), py::arg("block_size"), py::arg("bits") = 4,
            py::arg("accuracy_level") = 0,
            "MatMulNBits B u8[N, n_blocks, block_size*bits/8], scales f32|f16 [N*n_blocks], "
            "zero_points u8[N*ceil(n_blocks*bits/8)] | None -> NBitsMatrix");
    mod.def("nbits_dequantize", &nbits_dequantize_py, py::arg("w"),
            "the weights as float32 (N, K): (q - zero_point) * scale");
    mod.def("nbits_matmul", &nbits_matmul_py, py::arg("w"), py::arg("x"),
            py::arg("out") = py::none(), py::arg("batch_invariant") = false,
            "y (m, N) = x (m, K) @ w.T as onnxruntime computes it at w.accuracy_level (4: int8 "
            "activations per block, else float32); batch_invariant: every row as an m = 1 call "
            "gives it");
    mod.def("nbits_quantize", &nbits_quantize_py, py::arg("x"), py::arg("block_size"),
            py::arg("bits") = 4, py::arg("search") = true,
            "float32 rows (rows, K) -> MatMulNBits (B u8[rows, n_blocks, block_size*bits/8], "
            "scales f32[rows, n_blocks]), symmetric; search: least-squares scale per 4-bit block");
    mod.def("nbits_quantize_activations", &nbits_quantize_activations_py, py::arg("x"),
            py::arg("block_size"),
            "accuracy-level-4 activations: x (m, K) -> (int8 codes (m, n_blocks*block_size), "
            "float32 scales (m, n_blocks))");
}

// ---- thread pools ------------------------------------------------------------------------------
// Kernels run on the calling thread's pool (threadpool.h): the default one, sized by
// set_num_threads, or a ThreadPool a model installed around its kernel calls.

thread_local std::shared_ptr<ThreadPool> t_pool_owner;  // keeps the installed pool alive

py::object install_pool_py(std::shared_ptr<ThreadPool> pool) {
    std::shared_ptr<ThreadPool> previous = std::move(t_pool_owner);
    t_pool_owner = std::move(pool);
    install_pool(t_pool_owner.get());
    return previous ? py::cast(previous) : py::none();
}

void bind_threads(py::module_ &mod) {
    py::class_<ThreadPool, std::shared_ptr<ThreadPool>>(
        mod, "ThreadPool", "A pool of n_threads (the caller included) for one model's kernels.")
        .def(py::init([](int n) { return std::make_shared<ThreadPool>(clamp_threads(n)); }),
             py::arg("n_threads"))
        .def_property_readonly("size", &ThreadPool::size)
        .def(
            "resize", [](ThreadPool &pool, int n) { pool.resize(clamp_threads(n)); },
            py::arg("n_threads"));
    mod.def("install_pool", &install_pool_py, py::arg("pool").none(true),
            "run this thread's kernels on pool (None: the default pool); returns the previous");
    mod.def("set_num_threads", &set_num_threads, py::arg("n"),
            "size of the default pool, clamped to [1, 256]");
    mod.def("get_num_threads", &get_num_threads, "size of the pool this thread's kernels use");
}

}  // namespace

PYBIND11_MODULE(_kernels, mod) {
    mod.doc() = "phirt's SIMD quantized kernels (GGML block formats)";

    py::class_<QMatrix>(mod, "QMatrix", "A weight matrix (n rows x k) in a GGML block format.")
        .def(py::init<const py::buffer &, int, int64_t, int64_t>(), py::arg("data"),
             py::arg("type"), py::arg("n"), py::arg("k"))
        .def_property_readonly("n", &QMatrix::n)
        .def_property_readonly("k", &QMatrix::k)
        .def_property_readonly("type", &QMatrix::type)
        .def_property_readonly("nbytes", &QMatrix::nbytes);

    mod.def("matmul", &matmul_py, py::arg("w"), py::arg("x"), py::arg("out") = py::none(),
            py::arg("batch_invariant") = false,
            "y (m, n) = x (m, k) @ w.T with activations quantized on the fly; batch_invariant: "
            "each row bit for bit as an m = 1 call gives it");
    py::class_<Q4x16Matrix>(mod, "Q4x16Matrix",
                            "Q4_0 weights interleaved 16 rows at a time (cpp/q4x16.h), a copy "
                            "made by q4x16_repack.")
        .def_property_readonly("n", &Q4x16Matrix::n)
        .def_property_readonly("k", &Q4x16Matrix::k)
        .def_property_readonly("nbytes", &Q4x16Matrix::nbytes)
        .def("__repr__", [](const Q4x16Matrix &w) {
            return "Q4x16Matrix(n=" + std::to_string(w.n()) + ", k=" + std::to_string(w.k()) + ")";
        });
    mod.def("q4x16_repack", &q4x16_repack_py, py::arg("w"),
            "a Q4_0 QMatrix in the interleaved 16-row layout (a copy; runs on the pool)");
    mod.def("q4x16_matmul", &q4x16_matmul_py, py::arg("w"), py::arg("x"),
            py::arg("out") = py::none(), py::arg("batch_invariant") = false,
            "y (m, n) = x (m, k) @ w.T; each row the same whatever m (batch_invariant is accepted "
            "and always holds)");
    mod.def(
        "q4x16_native", [] { return active_kernels().q4_0x16 != nullptr; },
        "whether the active ISA has an interleaved Q4_0 kernel (else the scalar spec runs)");
    mod.def("get_rows", &get_rows_py, py::arg("w"), py::arg("ids"), "dequantized rows of w");
    mod.def("quantize", &quantize_py, py::arg("type"), py::arg("x"),
            "quantize float32 rows (last axis) to a GGML type (reference quantizer)");
    mod.def("dequantize", &dequantize_py, py::arg("type"), py::arg("data"), py::arg("k"),
            "dequantize rows of k values to float32 (rows, k)");
    mod.def(
        "row_bytes",
        [](int type, int64_t k) { return row_bytes_or_throw(traits_or_throw(type), k); },
        py::arg("type"), py::arg("k"));
    mod.def("rms_norm", &rms_norm_py, py::arg("x"), py::arg("weight"), py::arg("eps"),
            py::arg("out") = py::none());
    mod.def("layer_norm", &layer_norm_py, py::arg("x"), py::arg("weight"), py::arg("bias"),
            py::arg("eps"));
    mod.def("rope", &rope_py, py::arg("x"), py::arg("positions"), py::arg("n_rot"),
            py::arg("freq_base"), py::arg("neox"), py::arg("freq_factors") = py::none(),
            py::arg("freq_scale") = 1.0f, py::arg("attn_factor") = 1.0f);
    mod.def("attention_f32", &attention_f32_py, py::arg("q"), py::arg("k_cache_t"),
            py::arg("v_cache"), py::arg("pos0"), py::arg("scale"), py::arg("window") = 0);
    mod.def("rope_cache", &rope_cache_py, py::arg("x"), py::arg("positions"), py::arg("cos"),
            py::arg("sin"), py::arg("n_rot"), py::arg("neox"));
    mod.def("softmax", &softmax_py, py::arg("x"));
    mod.def("swiglu", &swiglu_py, py::arg("x"));
    mod.def("silu_mul", &silu_mul_py, py::arg("gate"), py::arg("up"));
    mod.def("gelu", &gelu_py, py::arg("x"));
    mod.def("gelu_tanh", &gelu_tanh_py, py::arg("x"));
    mod.def("attention", &attention_py, py::arg("q"), py::arg("k_cache"), py::arg("v_cache"),
            py::arg("pos0"), py::arg("scale"), py::arg("window") = 0);
    mod.def(
        "attention_spans", &attention_spans_py, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("k_caches"), py::arg("v_caches"), py::arg("bounds"), py::arg("pos0s"),
        py::arg("scale"), py::arg("window") = 0,
        "Several sequences in one call: rows [bounds[i], bounds[i + 1]) of q, k, v belong to "
        "the sequence whose layer caches are k_caches[i], v_caches[i], at positions pos0s[i]..; "
        "stores their k, v, then attends as attention() does for each alone");
    mod.def("kv_store", &kv_store_py, py::arg("cache"), py::arg("x"), py::arg("pos0"),
            "cache[:, pos0:pos0 + m] = x (m, n_head, hd) transposed, as float16 or, for a uint8 "
            "cache, as Q8_0 rows");

    bind_nbits(mod);  // ONNX MatMulNBits
    bind_gguf(mod);   // GGUF string arrays

    bind_threads(mod);
    mod.def("install_sigbus_note", &install_sigbus_note,
            "print a one-line cause before a SIGBUS (a mapped model file truncated) ends the "
            "process; installed once, chaining to the previous handler");
    mod.def("physical_cores", &physical_cores);
    mod.def("isa", [] { return std::string(active_kernels().isa); });
    mod.def("available_isas", &available_isas);
    mod.def(
        "set_isa",
        [](const std::string &name) {
            try {
                set_isa(name);
            } catch (const std::invalid_argument &e) {
                throw py::value_error(e.what());
            }
        },
        py::arg("name"));
    mod.def("cpu_features", [] {
        const CpuFeatures &f = cpu_features();
        py::dict d;
        d["avx2"] = f.avx2;
        d["fma"] = f.fma;
        d["f16c"] = f.f16c;
        d["avx512f"] = f.avx512f;
        d["avx512bw"] = f.avx512bw;
        d["avx512vl"] = f.avx512vl;
        d["avx512dq"] = f.avx512dq;
        d["avx512vnni"] = f.avx512vnni;
        d["avxvnni"] = f.avxvnni;
        d["neon"] = f.neon;
        d["dotprod"] = f.dotprod;
        d["i8mm"] = f.i8mm;
        return d;
    });

    // A bad PHIRT_ISA is reported at import, not at the first kernel call.
    try {
        (void)active_kernels();
    } catch (const std::invalid_argument &e) {
        throw py::value_error(std::string("PHIRT_ISA: ") + e.what());
    }
}
