/* board.h - what startup.c offers main.c: instruction-driven tick counting and stack measuring. */
#ifndef MCU_BOARD_H
#define MCU_BOARD_H

#include <stddef.h>
#include <stdint.h>

void cycles_start(void);
uint64_t cycles_now(void); /* SysTick ticks since cycles_start (core clock) */
size_t stack_used(void);   /* high-water mark of the stack, bytes */
size_t stack_size(void);

#endif
