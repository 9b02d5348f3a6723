/**
 * The outbox of the Redis layer: invalidations (and direct writes) go to
 * Redis one at a time, in the order they were made. One that Redis does not
 * take stays at the head and is retried with backoff until it is taken, so
 * an invalidation is never lost and never overtaken by a later one. While
 * the outbox holds anything, the layer reads nothing from L2 (lib/redis.ts).
 *
 * The queue is bounded: past MAX_OUTBOX operations, everything queued is
 * folded into one `{ all: true }` invalidation (a cold cache everywhere
 * rather than a lost revocation).
 */

/** Operations queued at most before they are folded into one `all`. */
export const MAX_OUTBOX = 10_000
export const RETRY_MIN_MS = 50
export const RETRY_MAX_MS = 2000

interface Slot<Op> {
  op: Op
  resolve: () => void
  reject: (error: Error) => void
}

export interface OutboxHost<Op> {
  /** Delivers one operation; rejects when Redis did not take it. */
  run (op: Op): Promise<void>
  /** The operation that stands for everything queued when the queue overflows. */
  fold (): Op
  /** Redis did not take the head operation (first failure of a stall), or took it after failures. */
  stalled (error: Error, pending: number): void
  drained (): void
}

export class Outbox<Op> {
  readonly #host: OutboxHost<Op>
  #queue: Array<Slot<Op>> = []
  #running = false
  #failures = 0
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor (host: OutboxHost<Op>) {
    this.#host = host
  }

  /** Operations not yet taken by Redis. */
  get pending (): number {
    return this.#queue.length
  }

  /** Queues an operation; the promise settles once Redis took it. */
  push (op: Op): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('the Redis layer is closed'))
    let slot: Slot<Op> | undefined
    const done = new Promise<void>((resolve, reject) => { slot = { op, resolve, reject } })
    this.#queue.push(slot as Slot<Op>)
    if (this.#queue.length > MAX_OUTBOX) this.#fold()
    this.#pump()
    return done
  }

  /** Replaces everything queued but the head in flight by one operation that covers all of it. */
  #fold (): void {
    const keep = this.#running ? this.#queue.slice(0, 1) : []
    const folded = this.#queue.slice(keep.length)
    const all: Slot<Op> = {
      op: this.#host.fold(),
      resolve: () => { for (const slot of folded) slot.resolve() },
      reject: (error) => { for (const slot of folded) slot.reject(error) }
    }
    this.#queue = [...keep, all]
  }

  #pump (): void {
    if (this.#running || this.#timer !== undefined || this.#closed) return
    const head = this.#queue[0]
    if (head === undefined) return
    this.#running = true
    this.#host.run(head.op).then(() => {
      this.#running = false
      this.#queue.shift()
      head.resolve()
      if (this.#failures > 0 && this.#queue.length === 0) this.#host.drained()
      if (this.#queue.length === 0) this.#failures = 0
      this.#pump()
    }, (error: Error) => {
      this.#running = false
      if (this.#closed) return
      this.#failures++
      if (this.#failures === 1) this.#host.stalled(error, this.#queue.length)
      const wait = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(this.#failures - 1, 10))
      this.#timer = setTimeout(() => {
        this.#timer = undefined
        this.#pump()
      }, wait)
      this.#timer.unref()
    })
  }

  /** Retries the head now instead of at its backoff (the connection just came back). */
  retryNow (): void {
    if (this.#timer === undefined) return
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#pump()
  }

  /** Stops retrying; what is still queued fails. */
  close (): void {
    this.#closed = true
    clearTimeout(this.#timer)
    this.#timer = undefined
    const error = new Error('the Redis layer closed before Redis took this invalidation')
    for (const slot of this.#queue.splice(0)) slot.reject(error)
  }
}
