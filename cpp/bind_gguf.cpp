// GGUF string arrays for the Python header reader: a vocabulary holds ~100k length-prefixed
// strings (tokens and merges), which a Python loop reads in ~65 ms and this in a few.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>

namespace py = pybind11;

namespace phirt {

namespace {

// Reads up to `count` GGUF strings (u64 little-endian byte length, then UTF-8 bytes) starting at
// byte `pos` of `buf`. Returns (strings, end position). It stops early, without raising, at the
// first string that is truncated or not valid UTF-8: the caller then re-reads that one with its
// checked reader, which names the problem.
py::tuple read_strings(const py::buffer &buf, uint64_t pos, uint64_t count) {
    const py::buffer_info info = buf.request();
    if (info.ndim != 1 || info.itemsize != 1 || info.strides[0] != 1)
        throw py::value_error("read_strings needs a contiguous 1-D byte buffer");
    const auto *data = static_cast<const uint8_t *>(info.ptr);
    const uint64_t size = (uint64_t)info.size;
    if (pos > size) throw py::value_error("read_strings: start is past the end of the buffer");

    py::list out;
    for (uint64_t i = 0; i < count; ++i) {
        if (size - pos < 8) break;
        uint64_t n;
        std::memcpy(&n, data + pos, 8);  // GGUF is little-endian, as are the hosts we build for
        if (n > size - pos - 8) break;
        PyObject *s = PyUnicode_DecodeUTF8(reinterpret_cast<const char *>(data + pos + 8),
                                           (Py_ssize_t)n, "strict");
        if (s == nullptr) {
            PyErr_Clear();
            break;
        }
        out.append(py::reinterpret_steal<py::str>(s));
        pos += 8 + n;
    }
    return py::make_tuple(std::move(out), pos);
}

}  // namespace

void bind_gguf(py::module_ &mod) {
    mod.def("read_strings", &read_strings, py::arg("buf"), py::arg("pos"), py::arg("count"),
            "(strings, end) of up to count GGUF strings from buf[pos:]; stops at a bad one");
}

}  // namespace phirt
