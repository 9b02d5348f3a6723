/**
 * Watches, from the outside, the timer and immediate callbacks that descend
 * from code run inside `capture()` (for instance the sweep timer a cache
 * starts in its constructor, and every `setImmediate` its callbacks chain):
 * how many ran in each event-loop turn, how long each took, and how much
 * work each did by a counter the caller reads (`progress`). Lineage comes
 * from async_hooks (a callback scheduled while a watched one runs is
 * watched), so nothing inside the code under test is touched.
 */
import { createHook, type AsyncHook } from 'node:async_hooks'

export interface TurnCallbacks {
  /** Watched callbacks that ran since the last `take()`. */
  callbacks: number
  /** Those of them that moved `progress`. */
  working: number
  /** Time spent inside watched callbacks since the last `take()`. */
  busyMs: number
}

export class CallbackWatch {
  readonly #progress: () => number
  readonly #watched = new Set<number>()
  readonly #running = new Map<number, { t: number, p: number }>()
  readonly #hook: AsyncHook
  #capturing = false
  #turn: TurnCallbacks = { callbacks: 0, working: 0, busyMs: 0 }
  /** The longest single watched callback, in ms. */
  longestMs = 0

  constructor (progress: () => number) {
    this.#progress = progress
    this.#hook = createHook({
      init: (id, type, triggerId) => {
        if ((type === 'Immediate' || type === 'Timeout') && (this.#capturing || this.#watched.has(triggerId))) this.#watched.add(id)
      },
      before: (id) => {
        if (this.#watched.has(id)) this.#running.set(id, { t: performance.now(), p: this.#progress() })
      },
      after: (id) => {
        const start = this.#running.get(id)
        if (start === undefined) return
        this.#running.delete(id)
        const ms = performance.now() - start.t
        this.#turn.callbacks++
        this.#turn.busyMs += ms
        if (this.#progress() !== start.p) this.#turn.working++
        if (ms > this.longestMs) this.longestMs = ms
      },
      destroy: (id) => {
        this.#watched.delete(id)
        this.#running.delete(id)
      }
    })
    this.#hook.enable()
  }

  /** Runs `fn` (synchronously); the timers and immediates it creates are watched. */
  capture<T> (fn: () => T): T {
    this.#capturing = true
    try {
      return fn()
    } finally {
      this.#capturing = false
    }
  }

  /** What ran since the last call. */
  take (): TurnCallbacks {
    const turn = this.#turn
    this.#turn = { callbacks: 0, working: 0, busyMs: 0 }
    return turn
  }

  stop (): void {
    this.#hook.disable()
  }
}
