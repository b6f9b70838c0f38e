"""CUDA C sources of the built-in kernels (compiled at run time with NVRTC)."""
