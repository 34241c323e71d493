/* startup.c - reset and exception handling for an Armv7-M / Armv8.1-M core with no OS.
 *
 * The core reads its initial stack pointer and reset address from the vector table at address 0
 * (both QEMU boards boot there); Reset_Handler enables the FPU (and MVE, which shares its
 * enable bits), copies .data from flash, zeroes .bss, paints the stack so that its high-water
 * mark can be measured, and calls main.  SysTick runs free over its 24 bits and counts wraps:
 * under QEMU's -icount the core clock is derived from retired instructions, so ticks measure work. */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "semihost.h"

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_limit[], __stack_top[];
int main(void);

#define STACK_PAINT 0xC0FFEE11u
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static volatile uint32_t systick_wraps;

/* Runs before .data/.bss exist and before the FPU is on: nothing here may touch a global or let
 * the compiler turn a loop into a library call that could use FP/vector registers. */
__attribute__((noreturn, used, optimize("no-tree-loop-distribute-patterns", "no-tree-vectorize")))
void Reset_Handler(void) {
    SCB_CPACR |= 0xFu << 20; /* CP10 + CP11 full access: FPU, and MVE on Armv8.1-M */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    for (uint32_t *src = __data_load, *dst = __data_start; dst < __data_end;) *dst++ = *src++;
    for (uint32_t *p = __bss_start; p < __bss_end;) *p++ = 0;
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = __stack_limit; p < sp - 16;) *p++ = STACK_PAINT;
    sh_exit(main() == 0);
}

static void fault(const char *what) {
    int err = sh_open_console(1);
    sh_write(err, what, strlen(what));
    sh_exit(0);
}
void HardFault_Handler(void) { fault("mcu: hard fault\n"); }
void Default_Handler(void) { fault("mcu: unexpected exception\n"); }
void SysTick_Handler(void) { systick_wraps++; }

void cycles_start(void) {
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* enable, interrupt on wrap, core clock */
    while (SYST_CVR == 0) { /* the write cleared it; counting starts with the reload */
    }
}

uint64_t cycles_now(void) {
    uint32_t wraps, value;
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    return ((uint64_t)wraps << 24) + (0xFFFFFFu - value);
}

size_t stack_used(void) {
    const uint32_t *p = __stack_limit;
    while (p < __stack_top && *p == STACK_PAINT) p++;
    return (size_t)((const uint8_t *)__stack_top - (const uint8_t *)p);
}

size_t stack_size(void) { return (size_t)((const uint8_t *)__stack_top - (const uint8_t *)__stack_limit); }

typedef void (*vector)(void);
/* Cortex-M vector table: initial SP, then the 15 system exceptions (SysTick last). */
__attribute__((section(".vectors"), used)) const vector vector_table[16] = {
    (vector)(uintptr_t)__stack_top, Reset_Handler, Default_Handler, HardFault_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler, SysTick_Handler,
};
