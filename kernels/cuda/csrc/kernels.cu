// Single translation unit: gen-ptx.sh compiles this file to one PTX module
// per target architecture.
#include "matmul.cu"
#include "rowops.cu"
#include "elementwise.cu"
#include "attention.cu"
