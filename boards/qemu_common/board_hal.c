// Board support shared by Sealink's QEMU boards (MPS2-AN385 Cortex-M3, virt RV32):
//
// - ticks: a free-running hardware counter (CMSDK APB timer 0 at 25 MHz on MPS2, with
//   a one-second period counted by its interrupt; CLINT mtime at 10 MHz on virt), so under `qemu -icount shift=0` time advances with
//   guest instructions and time.ticks_us() counts them (1 us = 1000 instructions);
// - stdin: the UART receive interrupt fills a ring buffer; poll() sees it;
// - idle: WFI, woken by the UART or a one-shot wake-up timer (CMSDK timer 1 on MPS2,
//   mtimecmp on virt), so an idle guest does not burn a host core;
// - entropy: the host's /dev/urandom, opened at boot through semihosting.

#include <string.h>

#include "py/runtime.h"
#include "py/mphal.h"
#include "py/stream.h"
#include "shared/runtime/interrupt_char.h"
#include "uart.h"

// --- Receive ring buffer, filled from the UART interrupt ------------------------------

// Room for four of the module's longest lines: "+EVT:RXP2P:<rssi>:<snr>:" and a
// 235-byte frame in hex is ~490 characters (EU868 SF7), and the RX1 and RX2 frames of
// one answer arrive a second apart while the interpreter may be busy with a handshake.
#define RX_BUF_SIZE (2048)
static volatile uint8_t rx_buf[RX_BUF_SIZE];
static volatile uint32_t rx_head;
static volatile uint32_t rx_tail;

static void board_rx_push(int c) {
    if (c == mp_interrupt_char) {
        mp_sched_keyboard_interrupt();
        return;
    }
    uint32_t next = (rx_head + 1) % RX_BUF_SIZE;
    if (next != rx_tail) {
        rx_buf[rx_head] = c;
        rx_head = next;
    }
}

static void board_uart_isr_poll(void);

static int board_rx_pop(void) {
    board_uart_isr_poll();
    if (rx_tail == rx_head) {
        return -1;
    }
    int c = rx_buf[rx_tail];
    rx_tail = (rx_tail + 1) % RX_BUF_SIZE;
    return c;
}

// --- SoC specifics ----------------------------------------------------------------------

#if defined(QEMU_SOC_MPS2)

#define TICKS_PER_US (25)

typedef struct _cmsdk_timer_t {
    volatile uint32_t CTRL;
    volatile uint32_t VALUE;
    volatile uint32_t RELOAD;
    volatile uint32_t INTSTATUS; // write 1 to clear
} cmsdk_timer_t;

typedef struct _cmsdk_uart_t {
    volatile uint32_t DATA;
    volatile uint32_t STATE;
    volatile uint32_t CTRL;
    volatile uint32_t INTSTATUS; // write 1 to clear
} cmsdk_uart_t;

#define TIMER_TICKS ((cmsdk_timer_t *)0x40000000) // IRQ 8, one-second period
#define TIMER_WAKE ((cmsdk_timer_t *)0x40001000)  // IRQ 9, one-shot wake-up
#define UART0_REGS ((cmsdk_uart_t *)0x40004000)   // RX IRQ 0

#define TIMER_CTRL_EN (1 << 0)
#define TIMER_CTRL_IRQEN (1 << 3)
#define UART_STATE_RXFULL (1 << 1)
#define UART_CTRL_RXIRQEN (1 << 3)
#define UART_INT_RX (1 << 1)

#define IRQ_UART0_RX (0)
#define IRQ_TIMER0 (8)
#define IRQ_TIMER1 (9)

#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100)
#define SCB_VTOR (*(volatile uint32_t *)0xE000ED08)

// The tick timer counts down from TICKS_PERIOD - 1 once a second; its interrupt
// counts the seconds.  Keeping the period at a whole second avoids 64-bit division
// (libgcc's brings .ARM.exidx, which the port's linker script does not place).
#define TICKS_PERIOD (25000000)
static volatile uint32_t ticks_seconds;

// Clear the interrupt before draining: a byte that lands after the drain raises it
// again, where clearing afterwards could lose that interrupt and strand the byte.
static void board_uart_isr(void) {
    UART0_REGS->INTSTATUS = UART_INT_RX;
    while (UART0_REGS->STATE & UART_STATE_RXFULL) {
        board_rx_push(UART0_REGS->DATA & 0xff);
    }
}

static void board_ticks_isr(void) {
    TIMER_TICKS->INTSTATUS = 1;
    ticks_seconds += 1;
}

static void board_wake_isr(void) {
    TIMER_WAKE->INTSTATUS = 1;
    TIMER_WAKE->CTRL = 0;
}

// The port's table has only the 16 system exceptions: copy it into one that also
// holds the external interrupts, and point VTOR at it.
#define VECTOR_COUNT (16 + 32)
static uint32_t vector_table[VECTOR_COUNT] __attribute__((aligned(256)));

static inline uint32_t irq_save(void) {
    uint32_t primask;
    __asm volatile ("mrs %0, primask\n cpsid i" : "=r" (primask) : : "memory");
    return primask;
}

static inline void irq_restore(uint32_t primask) {
    __asm volatile ("msr primask, %0" : : "r" (primask) : "memory");
}

static inline void cpu_wfi(void) {
    __asm volatile ("wfi" : : : "memory");
}

// Seconds and 25 MHz ticks within the second, read consistently.
static void board_time(uint32_t *seconds, uint32_t *ticks) {
    uint32_t state = irq_save();
    uint32_t s = ticks_seconds;
    uint32_t t = (TICKS_PERIOD - 1) - TIMER_TICKS->VALUE;
    if (TIMER_TICKS->INTSTATUS & 1) {
        // Wrapped but not yet serviced: read again after the wrap.
        t = (TICKS_PERIOD - 1) - TIMER_TICKS->VALUE;
        s += 1;
    }
    irq_restore(state);
    *seconds = s;
    *ticks = t;
}

static uint64_t board_ticks_us(void) {
    uint32_t s, t;
    board_time(&s, &t);
    return (uint64_t)s * 1000000 + t / TICKS_PER_US;
}

mp_uint_t mp_hal_ticks_ms(void) {
    uint32_t s, t;
    board_time(&s, &t);
    return s * 1000 + t / (TICKS_PER_US * 1000);
}

mp_uint_t mp_hal_ticks_cpu(void) {
    uint32_t s, t;
    board_time(&s, &t);
    return s * TICKS_PERIOD + t;
}

static void board_wake_after(uint32_t n) {
    TIMER_WAKE->CTRL = 0;
    TIMER_WAKE->INTSTATUS = 1;
    TIMER_WAKE->RELOAD = n;
    TIMER_WAKE->VALUE = n;
    TIMER_WAKE->CTRL = TIMER_CTRL_EN | TIMER_CTRL_IRQEN;
}

static void board_soc_init(void) {
    const uint32_t *old = (const uint32_t *)SCB_VTOR;
    for (int i = 0; i < 16; ++i) {
        vector_table[i] = old[i];
    }
    for (int i = 16; i < VECTOR_COUNT; ++i) {
        vector_table[i] = old[3]; // unexpected interrupts end in the HardFault handler
    }
    vector_table[16 + IRQ_UART0_RX] = (uint32_t)board_uart_isr;
    vector_table[16 + IRQ_TIMER0] = (uint32_t)board_ticks_isr;
    vector_table[16 + IRQ_TIMER1] = (uint32_t)board_wake_isr;
    __asm volatile ("dsb" : : : "memory");
    SCB_VTOR = (uint32_t)vector_table;
    __asm volatile ("dsb\n isb" : : : "memory");

    TIMER_TICKS->CTRL = 0;
    TIMER_TICKS->RELOAD = TICKS_PERIOD - 1;
    TIMER_TICKS->VALUE = TICKS_PERIOD - 1;
    TIMER_TICKS->INTSTATUS = 1;
    TIMER_TICKS->CTRL = TIMER_CTRL_EN | TIMER_CTRL_IRQEN;
    TIMER_WAKE->CTRL = 0;

    UART0_REGS->CTRL |= UART_CTRL_RXIRQEN;
    NVIC_ISER0 = (1 << IRQ_UART0_RX) | (1 << IRQ_TIMER0) | (1 << IRQ_TIMER1);
    __asm volatile ("cpsie i" : : : "memory");
}

// ARM semihosting: BKPT 0xAB with the operation in r0 and the argument block in r1.
int32_t board_semihosting_call(uint32_t op, const void *args) {
    register uint32_t r0 __asm__ ("r0") = op;
    register const void *r1 __asm__ ("r1") = args;
    __asm volatile ("bkpt 0xab" : "+r" (r0) : "r" (r1) : "memory");
    return (int32_t)r0;
}

#elif defined(QEMU_SOC_VIRT)

#define TICKS_PER_US (10)

#define CLINT_MTIMECMP_LO (*(volatile uint32_t *)0x02004000)
#define CLINT_MTIMECMP_HI (*(volatile uint32_t *)0x02004004)
#define CLINT_MTIME_LO (*(volatile uint32_t *)0x0200BFF8)
#define CLINT_MTIME_HI (*(volatile uint32_t *)0x0200BFFC)

#define PLIC_BASE (0x0C000000)
#define PLIC_PRIORITY(irq) (*(volatile uint32_t *)(PLIC_BASE + 4 * (irq)))
#define PLIC_ENABLE0 (*(volatile uint32_t *)(PLIC_BASE + 0x2000))
#define PLIC_THRESHOLD0 (*(volatile uint32_t *)(PLIC_BASE + 0x200000))
#define PLIC_CLAIM0 (*(volatile uint32_t *)(PLIC_BASE + 0x200004))
#define IRQ_UART0 (10)

#define UART_RBR (*(volatile uint8_t *)0x10000000)
#define UART_IER (*(volatile uint8_t *)0x10000001)
#define UART_MCR (*(volatile uint8_t *)0x10000004)
#define UART_LSR (*(volatile uint8_t *)0x10000005)
#define UART_LSR_DR (0x01)

#define MIE_MTIE (1 << 7)
#define MIE_MEIE (1 << 11)
#define MSTATUS_MIE (1 << 3)

static inline uint32_t irq_save(void) {
    uint32_t mstatus;
    __asm volatile ("csrrci %0, mstatus, 8" : "=r" (mstatus) : : "memory");
    return mstatus & MSTATUS_MIE;
}

static inline void irq_restore(uint32_t state) {
    if (state) {
        __asm volatile ("csrsi mstatus, 8" : : : "memory");
    }
}

static inline void cpu_wfi(void) {
    __asm volatile ("wfi" : : : "memory");
}

static uint64_t board_mtime(void) {
    uint32_t hi, lo;
    do {
        hi = CLINT_MTIME_HI;
        lo = CLINT_MTIME_LO;
    } while (hi != CLINT_MTIME_HI);
    return ((uint64_t)hi << 32) | lo;
}

static void board_set_mtimecmp(uint64_t when) {
    // Raise the high word first so no intermediate value fires early.
    CLINT_MTIMECMP_HI = 0xffffffff;
    CLINT_MTIMECMP_LO = (uint32_t)when;
    CLINT_MTIMECMP_HI = (uint32_t)(when >> 32);
}

static void board_wake_after(uint32_t ticks) {
    board_set_mtimecmp(board_mtime() + ticks);
}

static uint64_t board_ticks_us(void) {
    return board_mtime() / TICKS_PER_US;
}

mp_uint_t mp_hal_ticks_ms(void) {
    return (mp_uint_t)(board_mtime() / (TICKS_PER_US * 1000));
}

mp_uint_t mp_hal_ticks_cpu(void) {
    return (mp_uint_t)board_mtime();
}

__attribute__((interrupt("machine"))) static void board_mti(void) {
    board_set_mtimecmp(UINT64_MAX);
}

static void board_uart_drain(void) {
    while (UART_LSR & UART_LSR_DR) {
        board_rx_push(UART_RBR);
    }
}

__attribute__((interrupt("machine"))) static void board_mei(void) {
    uint32_t irq = PLIC_CLAIM0;
    if (irq == IRQ_UART0) {
        board_uart_drain();
    }
    if (irq != 0) {
        PLIC_CLAIM0 = irq;
    }
}

// The port's exception handler and default interrupt handler (mcu/rv32/interrupts.c).
void mtvec_exception(void);
void mtvec_nop(void);

// Our own vectored table (mtvec MODE=1): each slot jumps to its handler.
void board_mtvec_table(void) __attribute__((naked, aligned(256)));
void board_mtvec_table(void) {
    __asm volatile (
        ".option push\n"
        ".option norvc\n"
        "j mtvec_exception\n" // 0: exceptions
        "j mtvec_nop\n"       // 1
        "j mtvec_nop\n"       // 2
        "j mtvec_nop\n"       // 3: machine software
        "j mtvec_nop\n"       // 4
        "j mtvec_nop\n"       // 5
        "j mtvec_nop\n"       // 6
        "j %0\n"              // 7: machine timer
        "j mtvec_nop\n"       // 8
        "j mtvec_nop\n"       // 9
        "j mtvec_nop\n"       // 10
        "j %1\n"              // 11: machine external (PLIC)
        ".option pop\n"
        : : "i" (board_mti), "i" (board_mei)
        );
}

static void board_soc_init(void) {
    board_set_mtimecmp(UINT64_MAX);
    __asm volatile ("csrw mtvec, %0" : : "r" ((uint32_t)board_mtvec_table | 1) : "memory");

    PLIC_PRIORITY(IRQ_UART0) = 1;
    PLIC_ENABLE0 = 1 << IRQ_UART0;
    PLIC_THRESHOLD0 = 0;
    UART_MCR |= 0x08; // OUT2 gates the 16550's interrupt line
    UART_IER = 0x01;  // received data available

    __asm volatile ("csrs mie, %0" : : "r" (MIE_MTIE | MIE_MEIE) : "memory");
    __asm volatile ("csrsi mstatus, 8" : : : "memory");
}

// RISC-V semihosting: the magic slli/ebreak/srai sequence, uncompressed and in one
// 16-byte aligned block, with the operation in a0 and the argument block in a1.
int32_t board_semihosting_call(uint32_t op, const void *args) {
    register uint32_t a0 __asm__ ("a0") = op;
    register const void *a1 __asm__ ("a1") = args;
    __asm volatile (
        ".option push\n"
        ".option norvc\n"
        ".balign 16\n"
        "slli zero, zero, 0x1f\n"
        "ebreak\n"
        "srai zero, zero, 7\n"
        ".option pop\n"
        : "+r" (a0) : "r" (a1) : "memory");
    return (int32_t)a0;
}

#else
#error "Sealink QEMU board support: unknown SoC"
#endif

// Drain the UART from thread mode too, with interrupts masked: a safety net should a
// receive interrupt ever be missed.
static void board_uart_isr_poll(void) {
    uint32_t state = irq_save();
    #if defined(QEMU_SOC_MPS2)
    board_uart_isr();
    #else
    board_uart_drain();
    #endif
    irq_restore(state);
}

// --- Ticks and delays -------------------------------------------------------------------

mp_uint_t mp_hal_ticks_us(void) {
    return (mp_uint_t)board_ticks_us();
}

uint64_t mp_hal_time_ns(void) {
    return board_ticks_us() * 1000;
}

void mp_hal_delay_us(mp_uint_t us) {
    uint64_t end = board_ticks_us() + us;
    while (board_ticks_us() < end) {
    }
}

void mp_hal_delay_ms(mp_uint_t ms) {
    uint64_t end = board_ticks_us() + (uint64_t)ms * 1000;
    for (;;) {
        uint64_t now = board_ticks_us();
        if (now >= end) {
            break;
        }
        uint32_t left_us = (end - now) > 0xffff0000 ? 0xffff0000 : (uint32_t)(end - now);
        mp_event_wait_ms((left_us + 999) / 1000);
    }
}

// Sleep until an interrupt, or at most timeout_ms (< 0: no timeout of our own).  The
// check and the WFI run with interrupts masked; a pending interrupt still ends WFI,
// so a byte that arrives between the check and the WFI cannot be slept through.
void board_wait_for_event(int32_t timeout_ms) {
    board_uart_isr_poll();
    uint32_t state = irq_save();
    if (rx_head == rx_tail && MP_STATE_VM(sched_state) == MP_SCHED_IDLE) {
        // Bounded even when the caller gives no timeout: a safety net, not a poll.
        uint32_t ms = (timeout_ms < 0 || timeout_ms > 1000) ? 1000 : (uint32_t)timeout_ms;
        board_wake_after(ms * 1000 * TICKS_PER_US);
        cpu_wfi();
    }
    irq_restore(state);
}

// --- stdin --------------------------------------------------------------------------------

uintptr_t mp_hal_stdio_poll(uintptr_t poll_flags) {
    board_uart_isr_poll();
    uintptr_t ret = 0;
    if ((poll_flags & MP_STREAM_POLL_RD) && rx_head != rx_tail) {
        ret |= MP_STREAM_POLL_RD;
    }
    if (poll_flags & MP_STREAM_POLL_WR) {
        ret |= MP_STREAM_POLL_WR;
    }
    return ret;
}

int mp_hal_stdin_rx_chr(void) {
    for (;;) {
        int c = board_rx_pop();
        if (c >= 0) {
            return c;
        }
        mp_event_wait_indefinite();
    }
}

// --- Entropy from the host ----------------------------------------------------------------

#define SYS_OPEN (0x01)
#define SYS_READ (0x06)

static int32_t entropy_handle = -1;

static void board_entropy_open(void) {
    static const char path[] = "/dev/urandom";
    uint32_t args[3] = { (uint32_t)path, 0 /* mode "r" */, sizeof(path) - 1 };
    entropy_handle = board_semihosting_call(SYS_OPEN, args);
}

int board_random_fill(uint8_t *buf, uint32_t len) {
    while (len > 0) {
        if (entropy_handle < 0) {
            return -1;
        }
        uint32_t args[3] = { (uint32_t)entropy_handle, (uint32_t)buf, len };
        // SYS_READ returns the number of bytes NOT read.
        int32_t left = board_semihosting_call(SYS_READ, args);
        if (left < 0 || (uint32_t)left >= len) {
            return -1;
        }
        buf += len - left;
        len = left;
    }
    return 0;
}

uint32_t board_random_seed(void) {
    uint32_t seed;
    if (board_random_fill((uint8_t *)&seed, sizeof(seed)) != 0) {
        mp_raise_OSError(MP_EIO);
    }
    return seed;
}

// --- Boot -----------------------------------------------------------------------------------

void board_early_init(void) {
    board_soc_init();
    board_entropy_open();
}
