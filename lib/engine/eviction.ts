/**
 * The eviction policies: which entry goes when an insert needs room.
 *
 * `tinylfu` (the default) is W-TinyLFU (Einziger, Friedman and Manes,
 * "TinyLFU: A Highly Efficient Cache Admission Policy"; Caffeine): a new
 * entry enters a small window (WINDOW_SHARE of `maxEntries`); once the cache
 * is full, the entry the window pushes out gets a place in the main region
 * only when the frequency sketch (./sketch.ts) says it was asked for more
 * often than the main region's victim. One-shot keys (a crawler, a bulk
 * export, a stream of distinct ids) pass through the window and never
 * displace what is read again and again. Denials, which live
 * `negativeTtlSeconds` where a grant lives `authTtlSeconds`, count
 * DENIAL_PENALTY less in that duel: a denial must be clearly hotter than the
 * grant it would replace.
 *
 * `clock` is the plain policy: CLOCK alone over one ring.
 *
 * Both regions are CLOCK rings (below). A hit only counts itself on the
 * entry (`hits`, which the hit path has in hand anyway): no list move, and
 * no write to the sketch, whose 12 bytes per entry would cost the hit a
 * cache miss. The hand adds the count to the sketch as it passes the entry
 * (Caffeine buffers reads for the same reason), and a duel adds what the
 * hand has not collected yet.
 *
 * CLOCK (second chance) runs over a ring of the entries in insertion order,
 * linked through the entries themselves.
 *
 * A hit counts itself on the entry (`hits`), an object the hit path reads
 * anyway: no list move, no allocation. To make room, the hand walks from
 * the oldest entry: one hit since the last pass gets its count cleared
 * (collected into the sketch under TinyLFU) and is passed over, the first
 * one not hit goes. Every step is O(1) (no iterator to restart, no Map holes to walk
 * past), and the hand passes over at most MAX_SECOND_CHANCES entries per
 * eviction, so even a cache whose every entry was read since the last pass
 * evicts in bounded time (it then takes the entry the hand stops on).
 */
import type { Entry, KindState } from './entry.js'
import { addressHash, FrequencySketch, MAX_COUNT } from './sketch.js'

/** Used entries the hand passes over before it evicts the one it stands on. */
export const MAX_SECOND_CHANCES = 64

export class ClockRing {
  /** The oldest entry not yet passed over; entries are linked oldest -> newest through `next`. */
  #hand: Entry | undefined
  /** Where the hand leaves the hits it collects (TinyLFU), if anywhere. */
  readonly #sketch: FrequencySketch | undefined

  constructor (sketch?: FrequencySketch) {
    this.#sketch = sketch
  }

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
    const sketch = this.#sketch
    for (let passed = 0; entry.hits > 0 && passed < MAX_SECOND_CHANCES; passed++) {
      if (sketch !== undefined) sketch.add(entry.hash, entry.hits)
      entry.hits = 0
      entry = entry.next
    }
    this.#hand = entry
    return entry
  }

  clear (): void {
    this.#hand = undefined
  }
}

/** Share of `maxEntries` held by the TinyLFU window (Caffeine's default): at least one entry. */
export const WINDOW_SHARE = 0.01
/** What a denial's frequency estimate loses in an admission duel against a grant. */
export const DENIAL_PENALTY = 2
/**
 * A candidate this frequent that loses its duel is still admitted once in
 * HASH_FLOOD_ADMIT_ONE_IN duels (Caffeine's defence): crafted ids that
 * inflate a victim's counters cannot keep a warm key out for good.
 */
export const HASH_FLOOD_THRESHOLD = 6
export const HASH_FLOOD_ADMIT_ONE_IN = 128

export type EvictionPolicyName = 'tinylfu' | 'clock'

/** What the store asks of a policy. */
export interface EvictionPolicy {
  readonly name: EvictionPolicyName
  /** The sketch (tinylfu): the engine records hits and misses in it. */
  readonly sketch: FrequencySketch | undefined
  /** Fixed bytes the policy holds, counted in `maxSizeMb`. */
  readonly bytes: number
  /** The sketch hash of an address (0 without a sketch). */
  hashOf (kind: KindState, id: string, userId: string): number
  /** A new entry, just stored. */
  add (entry: Entry): void
  /** An entry that leaves the cache. */
  delete (entry: Entry): void
  /** The entry to evict next (the caller removes it), or undefined when there is none. */
  victim (): Entry | undefined
  clear (): void
}

export class ClockPolicy implements EvictionPolicy {
  readonly name = 'clock'
  readonly sketch = undefined
  readonly bytes = 0
  readonly #ring = new ClockRing()

  hashOf (): number {
    return 0
  }

  add (entry: Entry): void {
    this.#ring.add(entry)
  }

  delete (entry: Entry): void {
    this.#ring.delete(entry)
  }

  victim (): Entry | undefined {
    return this.#ring.victim()
  }

  clear (): void {
    this.#ring.clear()
  }
}

export class TinyLfuPolicy implements EvictionPolicy {
  readonly name = 'tinylfu'
  readonly sketch: FrequencySketch
  readonly #window: ClockRing
  readonly #main: ClockRing
  readonly #windowMax: number
  readonly #seed: number
  readonly #random: () => number
  #windowCount = 0
  #mainCount = 0
  /** Duels won by the window's candidate (a main entry went instead) and lost (the candidate went). */
  admitted = 0
  rejected = 0

  /** `capacity`: the most entries the cache can hold; `random`: the engine's random source (hash seed, flood defence). */
  constructor (capacity: number, random: () => number) {
    this.sketch = new FrequencySketch(capacity)
    this.#window = new ClockRing(this.sketch)
    this.#main = new ClockRing(this.sketch)
    this.#windowMax = Math.max(1, Math.round(capacity * WINDOW_SHARE))
    this.#random = random
    this.#seed = Math.floor(random() * 0x100000000) | 0
  }

  get bytes (): number {
    return this.sketch.bytes
  }

  hashOf (kind: KindState, id: string, userId: string): number {
    return addressHash(this.#seed, kind.salt, id, userId)
  }

  /** Entries in the window (stats, tests). */
  get windowCount (): number {
    return this.#windowCount
  }

  add (entry: Entry): void {
    entry.inWindow = true
    this.#window.add(entry)
    this.#windowCount++
    // The cache had room (or `victim()` just made it): the window's oldest moves on to the main region.
    while (this.#windowCount > this.#windowMax) {
      const moved = this.#window.victim() as Entry
      this.#window.delete(moved)
      this.#windowCount--
      moved.inWindow = false
      this.#main.add(moved)
      this.#mainCount++
    }
  }

  delete (entry: Entry): void {
    if (entry.inWindow) {
      this.#window.delete(entry)
      this.#windowCount--
    } else {
      this.#main.delete(entry)
      this.#mainCount--
    }
  }

  victim (): Entry | undefined {
    if (this.#mainCount === 0) return this.#window.victim()
    // A full window will push its oldest out with the next insert: it must win its place against the main region's victim.
    if (this.#windowCount >= this.#windowMax) {
      const candidate = this.#window.victim() as Entry
      const victim = this.#main.victim() as Entry
      if (this.#admit(candidate, victim)) {
        this.admitted++
        return victim
      }
      this.rejected++
      return candidate
    }
    return this.#main.victim()
  }

  #admit (candidate: Entry, victim: Entry): boolean {
    const candidateFrequency = this.#frequency(candidate)
    const victimFrequency = this.#frequency(victim)
    if (candidateFrequency > victimFrequency) return true
    return candidateFrequency >= HASH_FLOOD_THRESHOLD && Math.floor(this.#random() * HASH_FLOOD_ADMIT_ONE_IN) === 0
  }

  /** The sketch's estimate and the hits the hand has not collected yet; a denial counts DENIAL_PENALTY less. */
  #frequency (entry: Entry): number {
    const frequency = Math.min(MAX_COUNT + 1, this.sketch.estimate(entry.hash) + entry.hits)
    return entry.denied ? frequency - DENIAL_PENALTY : frequency
  }

  clear (): void {
    this.#window.clear()
    this.#main.clear()
    this.#windowCount = 0
    this.#mainCount = 0
  }
}
