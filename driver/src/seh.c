/*
 * driver/src/seh.c - the only C in ringmap.
 *
 * MmProbeAndLockPages raises a structured exception when it cannot lock the pages (wdm.h
 * declaration; "Remarks" of its documentation). Rust has no __try, and an exception unwinding
 * through Rust frames (panic = "abort") bugchecks the system. This function catches it and
 * returns the exception code instead (STATUS_SUCCESS when the pages are locked).
 *
 * No WDK header is included (the cc crate does not know the WDK's include paths): the
 * prototype below is wdm.h's (NTKERNELAPI = __declspec(dllimport); on x64 and ARM64 there is
 * one calling convention). KPROCESSOR_MODE is CCHAR (char, signed with MSVC), LOCK_OPERATION
 * an enum (int). ntoskrnl.lib, which wdk-build links, provides __C_specific_handler.
 */

typedef long NTSTATUS;

/* excpt.h: GetExceptionCode() is this intrinsic, valid in an __except filter or block. */
unsigned long __cdecl _exception_code(void);

__declspec(dllimport) void MmProbeAndLockPages(void *MemoryDescriptorList, char AccessMode,
                                               int Operation);

NTSTATUS ringmap_probe_and_lock_pages(void *mdl, char access_mode, int operation)
{
    NTSTATUS status = 0; /* STATUS_SUCCESS */
    __try {
        MmProbeAndLockPages(mdl, access_mode, operation);
    } __except (1 /* EXCEPTION_EXECUTE_HANDLER */) {
        status = (NTSTATUS)_exception_code();
    }
    return status;
}
