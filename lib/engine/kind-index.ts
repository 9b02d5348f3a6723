/**
 * Where a kind's entries live: quick-lru maps (the L1 store), id -> the
 * entry when one user holds one for that id (the common case), else a Map
 * userId -> entry. The hit path hashes the id it was given, never a
 * ~97-character key, and the store derives keys instead of keeping them
 * (lib/keys.ts parses one back for exact-key invalidation).
 *
 * The maps are sharded by the id's last characters. V8 resizes a hash
 * table by rehashing all of it in one call: a 1M-entry Map that shrinks
 * below a quarter of its capacity blocks for ~60 ms on one `delete`, and one
 * that grows, on one `set`. With SHARDS maps each holds a sixteenth, so a
 * resize costs a sixteenth too (the sweeper's and the insert's bounds).
 *
 * quick-lru is sized never to drop anything (it keeps up to twice its
 * `maxSize` and drops whole generations at once, which is not a hard cap):
 * the caps and the eviction order are the store's (./store.ts, ./eviction.ts).
 */
import QuickLRU from 'quick-lru'
import type { Entry } from './entry.js'

/** An index slot: one entry, or a map of entries by user id. */
export type Slot = Entry | Map<string, Entry>

/** Maps per index (a power of two). */
export const SHARDS = 16
const SHARD_MASK = SHARDS - 1

/** The shard of a key: its last two characters (UUIDs and numbers vary there); an empty id is shard 0. */
export function shardOf (key: string): number {
  const n = key.length
  return (key.charCodeAt(n - 1) + 7 * key.charCodeAt(n - 2)) & SHARD_MASK
}

/** Maps of plain values, sharded like the index (the store's per-user lists). */
export class ShardedMap<V> {
  readonly #shards: Array<Map<string, V>> = []

  constructor () {
    for (let i = 0; i < SHARDS; i++) this.#shards.push(new Map())
  }

  get (key: string): V | undefined {
    return this.#shards[shardOf(key)].get(key)
  }

  set (key: string, value: V): void {
    this.#shards[shardOf(key)].set(key, value)
  }

  delete (key: string): void {
    this.#shards[shardOf(key)].delete(key)
  }

  clear (): void {
    for (const shard of this.#shards) shard.clear()
  }
}

export class KindIndex {
  readonly #shards: Array<QuickLRU<string, Slot>> = []

  constructor () {
    for (let i = 0; i < SHARDS; i++) this.#shards.push(new QuickLRU({ maxSize: Number.MAX_SAFE_INTEGER }))
  }

  /** The slot of an id (the hit path: one shard, one lookup, no recency move). */
  get (id: string): Slot | undefined {
    return this.#shards[shardOf(id)].peek(id)
  }

  /** The entry of an (id, user) pair. */
  entry (id: string, userId: string): Entry | undefined {
    const slot = this.get(id)
    if (slot === undefined) return undefined
    if (slot instanceof Map) return slot.get(userId)
    return slot.userId === userId ? slot : undefined
  }

  /** Adds an entry, which must be the pair's only one (the store removes the one it replaces first). */
  add (entry: Entry): void {
    const { id, userId } = entry
    const shard = this.#shards[shardOf(id)]
    const slot = shard.peek(id)
    if (slot === undefined) shard.set(id, entry)
    else if (slot instanceof Map) slot.set(userId, entry)
    else shard.set(id, new Map([[slot.userId, slot], [userId, entry]]))
  }

  /** Removes an entry if it is the one its pair holds. */
  delete (entry: Entry): void {
    const { id, userId } = entry
    const shard = this.#shards[shardOf(id)]
    const slot = shard.peek(id)
    if (slot === entry) {
      shard.delete(id)
    } else if (slot instanceof Map && slot.get(userId) === entry) {
      slot.delete(userId)
      // Back to the single-entry slot the hit path reads without a second map.
      if (slot.size === 1) shard.set(id, slot.values().next().value as Entry)
    }
  }

  /** Every entry (removing entries while iterating is safe: Map iterators see deletes). */
  * entries (): Generator<Entry> {
    for (const shard of this.#shards) {
      for (const [, slot] of shard) {
        if (slot instanceof Map) yield * slot.values()
        else yield slot
      }
    }
  }

  clear (): void {
    for (const shard of this.#shards) shard.clear()
  }
}
