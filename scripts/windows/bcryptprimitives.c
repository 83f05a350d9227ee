/* Test-environment plumbing, never shipped: wine 8 has no bcryptprimitives.dll, but Rust's std
 * (since 1.78) imports ProcessPrng from it. This shim forwards to advapi32's RtlGenRandom
 * (SystemFunction036) so that Rust programs built for x86_64-pc-windows-gnu start under wine.
 * Built and installed into a wine prefix by ensure_wine_prefix (scripts/lib.sh), for
 * scripts/windows-test.sh and scripts/windows-smoke.sh. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buf, ULONG len);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
    if (!SystemFunction036(data, n)) return FALSE;
    data += n;
    len -= n;
  }
  return TRUE;
}
