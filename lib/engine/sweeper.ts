/**
 * The background sweep of expired entries (`cleanupIntervalSeconds`).
 *
 * One chain at a time: a tick that finds a sweep still running does nothing.
 * A chain walks the cache in steps of at most SWEEP_STEP_MS of work, then
 * yields the event loop (setImmediate) before the next step, so a sweep of
 * any size never holds the loop for long. Timers are unref'd and stop on
 * close. Entries are also expired on read, so the sweep only reclaims memory.
 */
import type { Entry } from './entry.js'

/** Longest stretch of work one sweep step does before it yields the event loop, in ms. */
export const SWEEP_STEP_MS = 8
/** Entries looked at between two clock reads. */
const CLOCK_EVERY = 256

export interface SweepHost {
  now (): number
  entries (): Iterator<Entry>
  expire (entry: Entry): void
}

export class Sweeper {
  readonly #host: SweepHost
  readonly #timer: NodeJS.Timeout | undefined
  /** The running chain's position, or undefined when none runs. */
  #cursor: Iterator<Entry> | undefined
  #stopped = false

  constructor (host: SweepHost, intervalSeconds: number) {
    this.#host = host
    if (intervalSeconds > 0) {
      this.#timer = setInterval(() => { if (this.#cursor === undefined) this.#start() }, intervalSeconds * 1000)
      this.#timer.unref()
    }
  }

  /** Whether a chain is running. */
  get running (): boolean {
    return this.#cursor !== undefined
  }

  #start (): void {
    this.#cursor = this.#host.entries()
    this.#step()
  }

  #step (): void {
    const cursor = this.#cursor
    if (cursor === undefined || this.#stopped) return
    const host = this.#host
    const now = host.now()
    const until = performance.now() + SWEEP_STEP_MS
    for (let i = 1; ; i++) {
      const next = cursor.next()
      if (next.done === true) {
        this.#cursor = undefined
        return
      }
      if (next.value.expiresAt <= now) host.expire(next.value)
      if (i % CLOCK_EVERY === 0 && performance.now() >= until) break
    }
    setImmediate(() => this.#step()).unref()
  }

  /**
   * Removes every expired entry now, synchronously, and answers how many.
   * O(n) in the entries held and blocking: for tests and for small caches;
   * the timer does the same work in bounded steps.
   */
  sweepNow (): number {
    const host = this.#host
    const now = host.now()
    let removed = 0
    for (let cursor = host.entries(), next = cursor.next(); next.done !== true; next = cursor.next()) {
      if (next.value.expiresAt <= now) {
        host.expire(next.value)
        removed++
      }
    }
    return removed
  }

  stop (): void {
    this.#stopped = true
    clearInterval(this.#timer)
    this.#cursor = undefined
  }
}
