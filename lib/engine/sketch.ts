/**
 * The frequency sketch of the TinyLFU admission policy (./eviction.ts):
 * how often a key was asked for recently, in bounded memory.
 *
 * A count-min sketch of 4-bit counters (Einziger, Friedman and Manes,
 * "TinyLFU: A Highly Efficient Cache Admission Policy"; Caffeine's
 * FrequencySketch). A key's hash picks one 16-byte block of four 32-bit
 * words, and one of the eight nibbles of each word: its four counters sit on
 * one cache line. The estimate is the smallest of the four, so a collision
 * can only make a key look more frequent, never less.
 *
 * In front of it, a doorkeeper: a Bloom filter that absorbs a key's first
 * access, so the many keys asked for once never touch the counters. The
 * estimate adds one for a key the doorkeeper holds.
 *
 * Aging: after `sampleSize` recorded repeat accesses (ten per entry the
 * cache can hold), every counter is halved and the doorkeeper cleared, so
 * the sketch follows a popularity that moves instead of remembering a key's
 * past forever. Only accesses that reach the counters count: a first access
 * the doorkeeper absorbs does not, so a scan of one-shot keys does not age
 * the keys that are read again and again (on a Zipf 0.8 trace, counting them
 * too cost 3 points of hit ratio: 31.1% against 34.2%). The halving runs in
 * steps of HALVING_STEP_WORDS words, one step per recorded access, not in
 * one pass: a 1M-entry cache's sketch is 12 MB, and one pass blocked an
 * insert for ~2 ms. It ends long before the next one is due (a step per
 * access, ~W/32 steps against `sampleSize` = 10 x capacity accesses).
 *
 * Hashes are seeded from the engine's random source at construction: ids
 * come from callers, and a fixed hash would let one craft ids that collide
 * with each other to buy themselves a place in the cache.
 */

/** The largest value of a 4-bit counter. */
export const MAX_COUNT = 15
/** Recorded accesses per entry of capacity between two halvings (Caffeine's sample factor). */
export const SAMPLE_FACTOR = 10
/** Counters per entry of capacity (16 nibbles = 8 bytes), rounded up to a power of two. */
const WORDS_PER_ENTRY = 2
/** Doorkeeper bits per entry of capacity (4 bytes). */
const DOORKEEPER_BITS_PER_ENTRY = 32
/** Counter words one step of a halving covers (and the doorkeeper words in proportion). */
export const HALVING_STEP_WORDS = 32

/** The smallest power of two at or above `n` (n >= 1). */
function ceilingPowerOfTwo (n: number): number {
  let p = 1
  while (p < n) p *= 2
  return p
}

/** A 32-bit mix (murmur3's finalizer): every input bit moves every output bit. */
export function mix (h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
  return (h ^ (h >>> 16)) | 0
}

/**
 * A seeded 32-bit hash of a (salt, id, user id) address: every character of
 * both strings counts (ids that share a prefix or a suffix still differ).
 */
export function addressHash (seed: number, salt: number, id: string, userId: string): number {
  let h = seed ^ salt
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193)
  h = Math.imul(h ^ 0xff, 0x5bd1e995)
  for (let i = 0; i < userId.length; i++) h = Math.imul(h ^ userId.charCodeAt(i), 0x01000193)
  return mix(h ^ (id.length << 16) ^ userId.length)
}

export class FrequencySketch {
  /** Four 32-bit words a block, eight 4-bit counters a word. */
  readonly #table: Uint32Array
  readonly #blockMask: number
  readonly #doorkeeper: Uint32Array
  readonly #doorkeeperMask: number
  /** Recorded accesses between two halvings. */
  readonly sampleSize: number
  /** Accesses recorded since the last halving. */
  #additions = 0
  /** Halvings so far (stats, tests). */
  resets = 0
  /** The next counter word the halving in progress reaches; -1 when none is. */
  #halvingAt = -1

  /**
   * Sized for a cache of `capacity` entries: 8 bytes of counters and 4 of
   * doorkeeper per entry, rounded up to a power of two.
   */
  constructor (capacity: number) {
    const entries = ceilingPowerOfTwo(Math.max(1, capacity))
    const words = Math.max(4, entries * WORDS_PER_ENTRY)
    this.#table = new Uint32Array(words)
    this.#blockMask = (words >>> 2) - 1
    const bits = Math.max(32, entries * DOORKEEPER_BITS_PER_ENTRY)
    this.#doorkeeper = new Uint32Array(bits >>> 5)
    this.#doorkeeperMask = bits - 1
    this.sampleSize = Math.max(1, capacity) * SAMPLE_FACTOR
    // Touch every page now, at construction: a fresh typed array is mapped lazily, and the first write to
    // each page faults. A 1M-entry sketch (12 MB, ~3,000 pages) faulting on the eviction path cost the first
    // inserts of a full cache ~3 ms each (~10 us a fault on this VM).
    this.#table.fill(0)
    this.#doorkeeper.fill(0)
  }

  /** The bytes the sketch holds (counted in `maxSizeMb`). */
  static bytesFor (capacity: number): number {
    const entries = ceilingPowerOfTwo(Math.max(1, capacity))
    return Math.max(4, entries * WORDS_PER_ENTRY) * 4 + Math.max(32, entries * DOORKEEPER_BITS_PER_ENTRY) / 8
  }

  get bytes (): number {
    return this.#table.byteLength + this.#doorkeeper.byteLength
  }

  /** Accesses recorded since the last halving. */
  get additions (): number {
    return this.#additions
  }

  /** Records one access to the key of `hash` (the hit path: no allocation, a few word reads and writes). */
  increment (hash: number): void {
    // The doorkeeper takes a key's first access (two probes of one hash).
    const dk = this.#doorkeeper
    const dm = this.#doorkeeperMask
    const b1 = hash & dm
    const b2 = (hash >>> 11 ^ hash << 5) & dm
    const w1 = dk[b1 >>> 5]
    const w2 = dk[b2 >>> 5]
    const m1 = 1 << (b1 & 31)
    const m2 = 1 << (b2 & 31)
    if ((w1 & m1) === 0 || (w2 & m2) === 0) {
      dk[b1 >>> 5] = w1 | m1
      dk[b2 >>> 5] |= m2
      return
    }
    this.add(hash, 1)
  }

  /**
   * Records `count` repeat accesses straight in the counters, past the
   * doorkeeper: hits the eviction hand collected on a cached entry (a key
   * that was asked for before). Each counter saturates at MAX_COUNT; the
   * accesses count towards the next halving one by one.
   */
  add (hash: number, count = 1): void {
    const table = this.#table
    const base = (hash & this.#blockMask) << 2
    const h = mix(hash)
    let added = 0
    for (let i = 0; i < 4; i++) {
      const shift = ((h >>> (i << 3)) & 7) << 2
      const word = table[base + i]
      const value = (word >>> shift) & MAX_COUNT
      const next = value + count > MAX_COUNT ? MAX_COUNT : value + count
      if (next !== value) {
        table[base + i] = word + ((next - value) << shift)
        if (next - value > added) added = next - value
      }
    }
    if (this.#halvingAt >= 0) this.#halveStep()
    if (added > 0 && (this.#additions += added) >= this.sampleSize) this.#startHalving()
  }

  /** True while a halving is under way (tests). */
  get halving (): boolean {
    return this.#halvingAt >= 0
  }

  /** How often the key of `hash` was recorded (0 to MAX_COUNT + 1), aged by the halvings. */
  estimate (hash: number): number {
    const table = this.#table
    const base = (hash & this.#blockMask) << 2
    const h = mix(hash)
    let min = MAX_COUNT
    for (let i = 0; i < 4; i++) {
      const count = (table[base + i] >>> (((h >>> (i << 3)) & 7) << 2)) & MAX_COUNT
      if (count < min) min = count
    }
    const dk = this.#doorkeeper
    const dm = this.#doorkeeperMask
    const b1 = hash & dm
    const b2 = (hash >>> 11 ^ hash << 5) & dm
    const seen = (dk[b1 >>> 5] & (1 << (b1 & 31))) !== 0 && (dk[b2 >>> 5] & (1 << (b2 & 31))) !== 0
    return seen ? min + 1 : min
  }

  /** Starts halving every counter and clearing the doorkeeper (finishing a halving still under way first). */
  #startHalving (): void {
    this.finishHalving()
    this.#halvingAt = 0
    this.#additions = 0
    this.resets++
  }

  /**
   * One step: halves the next HALVING_STEP_WORDS counter words (a nibble's
   * low bit is dropped, never carried into its neighbour) and clears the
   * doorkeeper words in proportion.
   */
  #halveStep (): void {
    const table = this.#table
    const from = this.#halvingAt
    const to = Math.min(table.length, from + HALVING_STEP_WORDS)
    for (let i = from; i < to; i++) table[i] = (table[i] >>> 1) & 0x77777777
    const dk = this.#doorkeeper
    const dkFrom = Math.floor(from * dk.length / table.length)
    const dkTo = to === table.length ? dk.length : Math.floor(to * dk.length / table.length)
    dk.fill(0, dkFrom, dkTo)
    this.#halvingAt = to === table.length ? -1 : to
  }

  /** Completes a halving under way at once. */
  finishHalving (): void {
    while (this.#halvingAt >= 0) this.#halveStep()
  }
}
