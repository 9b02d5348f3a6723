/** GC pauses seen while a benchmark measured, to tell them apart from the code under test. */
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks'

export interface GcPause {
  /** `performance.now()` time the pause began, in ms. */
  start: number
  ms: number
  /** A mark-compact (full) collection. */
  major: boolean
}

export interface GcSummary {
  count: number
  totalMs: number
  maxMs: number
  /** Longest mark-compact (major) pause. */
  maxMajorMs: number
}

/** Records GC pauses from construction on (works in worker threads too). */
export class GcRecorder {
  #pauses: GcPause[] = []
  readonly #observer: PerformanceObserver

  constructor () {
    this.#observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind
        this.#pauses.push({ start: e.startTime, ms: e.duration, major: kind === constants.NODE_PERFORMANCE_GC_MAJOR })
      }
    })
    this.#observer.observe({ entryTypes: ['gc'] })
  }

  /**
   * The pauses recorded since the last call. Entries reach the observer
   * asynchronously, so this yields the event loop first: call it after the
   * measured code, never inside it.
   */
  async take (): Promise<GcPause[]> {
    await new Promise((resolve) => setTimeout(resolve, 20))
    const pauses = this.#pauses
    this.#pauses = []
    return pauses
  }

  stop (): void {
    this.#observer.disconnect()
  }
}

export function summarizeGc (pauses: GcPause[]): GcSummary {
  let totalMs = 0
  let maxMs = 0
  let maxMajorMs = 0
  for (const p of pauses) {
    totalMs += p.ms
    if (p.ms > maxMs) maxMs = p.ms
    if (p.major && p.ms > maxMajorMs) maxMajorMs = p.ms
  }
  const r1 = (x: number): number => Math.round(x * 10) / 10
  return { count: pauses.length, totalMs: r1(totalMs), maxMs: r1(maxMs), maxMajorMs: r1(maxMajorMs) }
}

/** Starts recording GC pauses; `stop()` resolves with a summary of what happened in between. */
export function watchGc (): { stop: () => Promise<GcSummary> } {
  const recorder = new GcRecorder()
  return {
    stop: async () => {
      const pauses = await recorder.take()
      recorder.stop()
      return summarizeGc(pauses)
    }
  }
}
