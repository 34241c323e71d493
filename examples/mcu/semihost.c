/* semihost.c - Arm semihosting over `bkpt 0xab` (M-profile): r0 = operation, r1 = argument
 * (usually a pointer to a block of words), result in r0. */
#include "semihost.h"

#include <stdint.h>
#include <string.h>

enum { SYS_OPEN = 0x01, SYS_WRITE = 0x05, SYS_GET_CMDLINE = 0x15, SYS_EXIT = 0x18 };
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define ADP_STOPPED_RUN_TIME_ERROR 0x20023u

static uintptr_t sh_call(uintptr_t op, const void *arg) {
    register uintptr_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int sh_open_console(int for_errors) {
    /* ":tt" is the console; mode 4 ("w") is stdout and mode 8 ("a") stderr on hosts that tell
     * them apart (QEMU does). */
    uintptr_t block[3] = {(uintptr_t)":tt", for_errors ? 8u : 4u, 3u};
    return (int)sh_call(SYS_OPEN, block);
}

void sh_write(int handle, const void *buf, size_t len) {
    if (len == 0) return;
    uintptr_t block[3] = {(uintptr_t)handle, (uintptr_t)buf, len};
    sh_call(SYS_WRITE, block);
}

int sh_cmdline(char *buf, size_t cap) {
    uintptr_t block[2] = {(uintptr_t)buf, cap};
    if (sh_call(SYS_GET_CMDLINE, block) != 0) return -1;
    return 0;
}

void sh_exit(int ok) {
    sh_call(SYS_EXIT, (const void *)(ok ? ADP_STOPPED_APPLICATION_EXIT : ADP_STOPPED_RUN_TIME_ERROR));
    for (;;) {
    }
}
