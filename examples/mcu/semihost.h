/* semihost.h - the few Arm semihosting calls the firmware needs (QEMU: -semihosting).
 * Semihosting is a debug channel: the core stops on `bkpt 0xab` and the host (QEMU, a debug probe)
 * performs the request.  It is the only I/O this firmware has. */
#ifndef MCU_SEMIHOST_H
#define MCU_SEMIHOST_H

#include <stddef.h>

void sh_write(int handle, const void *buf, size_t len);
int sh_open_console(int for_errors); /* ":tt" for writing: stdout, or stderr when for_errors */
/* The command line (QEMU: the kernel's path, a space, then -append's text), NUL-terminated.
 * Returns 0, or -1 if it does not fit in cap bytes. */
int sh_cmdline(char *buf, size_t cap);
void sh_exit(int ok) __attribute__((noreturn)); /* ok != 0: exit status 0, else 1 */

#endif
