"""libadamw's C structs for ctypes (include/adamw.h): the tools that call the library from Python
(bench_peers.py, keras_files.py) share them."""
import ctypes


class Variable(ctypes.Structure):
    """adamw_variable."""
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_uint32), ("ndim", ctypes.c_size_t),
                ("shape", ctypes.POINTER(ctypes.c_size_t)), ("data", ctypes.c_void_p), ("sharded", ctypes.c_uint8),
                ("shard_offset", ctypes.c_size_t), ("shard_len", ctypes.c_size_t)]


class Gradient(ctypes.Structure):
    """adamw_gradient."""
    _fields_ = [("variable", ctypes.c_size_t), ("dtype", ctypes.c_uint32), ("data", ctypes.c_void_p),
                ("len", ctypes.c_size_t), ("dense", ctypes.c_void_p), ("indices", ctypes.c_void_p),
                ("num_indices", ctypes.c_size_t), ("values", ctypes.c_void_p), ("num_values", ctypes.c_size_t)]
