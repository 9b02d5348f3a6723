/**
 * The eviction policy: CLOCK (second chance) over a ring of the entries in
 * insertion order, linked through the entries themselves.
 *
 * A hit sets the entry's `used` bit, on an object the hit path reads anyway:
 * no list move, no allocation. To make room, the hand walks from the oldest
 * entry: a used one gets its bit cleared and is passed over, the first unused
 * one goes. Every step is O(1) (no iterator to restart, no Map holes to walk
 * past), and the hand passes over at most MAX_SECOND_CHANCES entries per
 * eviction, so even a cache whose every entry was read since the last pass
 * evicts in bounded time (it then takes the entry the hand stops on).
 */
import type { Entry } from './entry.js'

/** Used entries the hand passes over before it evicts the one it stands on. */
export const MAX_SECOND_CHANCES = 64

export class ClockRing {
  /** The oldest entry not yet passed over; entries are linked oldest -> newest through `next`. */
  #hand: Entry | undefined

  /** Adds a new entry as the newest (just behind the hand). */
  add (entry: Entry): void {
    const hand = this.#hand
    if (hand === undefined) {
      entry.prev = entry
      entry.next = entry
      this.#hand = entry
      return
    }
    const newest = hand.prev
    entry.prev = newest
    entry.next = hand
    newest.next = entry
    hand.prev = entry
  }

  /** Unlinks an entry that leaves the cache. */
  delete (entry: Entry): void {
    if (entry.next === entry) {
      if (this.#hand === entry) this.#hand = undefined
    } else {
      entry.prev.next = entry.next
      entry.next.prev = entry.prev
      if (this.#hand === entry) this.#hand = entry.next
    }
    entry.prev = entry
    entry.next = entry
  }

  /** The entry to evict next (not unlinked: the caller removes it), or undefined when the ring is empty. */
  victim (): Entry | undefined {
    let entry = this.#hand
    if (entry === undefined) return undefined
    for (let passed = 0; entry.used && passed < MAX_SECOND_CHANCES; passed++) {
      entry.used = false
      entry = entry.next
    }
    this.#hand = entry
    return entry
  }

  clear (): void {
    this.#hand = undefined
  }
}
