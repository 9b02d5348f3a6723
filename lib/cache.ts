/**
 * AuthzCache: the L1 authorization cache engine, as the seed's facade. It
 * knows nothing of Fastify. The engine is in rooms, one concern per file:
 *
 *   engine/engine.ts        wiring, the hit path, loads and writes, invalidation, close
 *   engine/kinds.ts         the kinds (built-in, custom, uuid validations, cached functions)
 *   engine/entry.ts         an entry, a kind's state
 *   engine/kind-index.ts    where entries live: sharded quick-lru maps by id
 *   engine/store.ts         the store and its caps (the indexes, the user lists, tags; keys derived)
 *   engine/eviction.ts      the eviction policy (CLOCK over a ring of the entries)
 *   engine/loads.ts         single-flight loads and every fence ("invalidation wins")
 *   engine/resolver-call.ts the resolver call: timeout, answer checks, fail closed
 *   engine/invalidation.ts  what an invalidation touches, and removing it
 *   engine/codec.ts         compression of stored values
 *   engine/sweeper.ts       the background sweep of expired entries
 *   engine/stats.ts         counters, access-time samples, the stats snapshot
 *   engine/cached.ts        `cached(fn)`
 *   engine/shared.ts        the interface to a shared layer (Redis, lib/redis.ts)
 *
 * This file adds the seed's manager methods (`getGenerationAccess`,
 * `setTeamRole`, `invalidateUserData`, ...) on top of the engine.
 */
import { FST_AUTHZ_OPTIONS } from './errors.js'
import type { CacheLookup, Decision } from './types.js'
import { Engine } from './engine/engine.js'

export type { CachedOptions } from './engine/cached.js'
export type { CacheObserver } from './engine/engine.js'
export type { KindHandle } from './engine/entry.js'
export type { SharedHandle, SharedLayer, SharedRead } from './engine/shared.js'
export { ENTRY_OVERHEAD_BYTES, accountedBytes } from './engine/store.js'
export { ACCESS_SAMPLE_EVERY, ACCESS_SAMPLE_WINDOW } from './engine/stats.js'

export class AuthzCache extends Engine {
  // ---------------------------------------------- the seed's manager methods

  getUserProfile<T = Decision> (userId: string): CacheLookup<T> {
    return this.lookupResult<T>('profile', userId, userId)
  }

  setUserProfile (userId: string, profile: Record<string, unknown> | null, options?: { ttlSeconds?: number }): void {
    this.set('profile', userId, userId, profile as Decision | null, options)
  }

  getGenerationAccess (generationId: string, userId: string): CacheLookup<Decision> {
    return this.lookupResult('generation', generationId, userId)
  }

  setGenerationAccess (generationId: string, userId: string, decision: Decision | null, options?: { ttlSeconds?: number }): void {
    this.set('generation', userId, generationId, decision, options)
  }

  getProjectAccess (projectId: string, userId: string): CacheLookup<Decision> {
    return this.lookupResult('project', projectId, userId)
  }

  setProjectAccess (projectId: string, userId: string, decision: Decision | null, options?: { ttlSeconds?: number }): void {
    this.set('project', userId, projectId, decision, options)
  }

  getTeamRole (teamId: string, userId: string): CacheLookup<Decision> {
    return this.lookupResult('team', teamId, userId)
  }

  setTeamRole (teamId: string, userId: string, decision: Decision | null, options?: { ttlSeconds?: number }): void {
    this.set('team', userId, teamId, decision, options)
  }

  getUuidValidation<T = unknown> (uuid: string, context: string): CacheLookup<T> {
    this.checkId('uuid', uuid)
    this.checkId('context', context)
    const value = this.lookup(this.uuidState(), uuid, context) as T | undefined
    return { value, hit: value !== undefined }
  }

  setUuidValidation (uuid: string, context: string, result: unknown, options?: { ttlSeconds?: number }): void {
    this.checkId('uuid', uuid)
    this.checkId('context', context)
    if (result === undefined) throw new FST_AUTHZ_OPTIONS('result', 'must not be undefined')
    const state = this.uuidState()
    this.put(state, uuid, context, state.keyOf(uuid, context), result, options?.ttlSeconds)
  }

  /** Removes every entry of the user (all kinds) here; also published when a shared layer is attached. */
  invalidateUserData (userId: string): number {
    return this.local({ userId })
  }

  /** Removes every entry of the generation (all users). */
  invalidateGenerationData (generationId: string): number {
    return this.local({ generationId })
  }

  invalidateProjectData (projectId: string): number {
    return this.local({ projectId })
  }

  invalidateTeamData (teamId: string): number {
    return this.local({ teamId })
  }

  /** Removes entries whose key matches; `*` matches any run of characters. Cost: one pass over the keys. */
  invalidateByPattern (pattern: string): number {
    return this.local({ pattern })
  }

  /** Removes entries carrying any of the tags. Cost: proportional to what is removed. */
  invalidateByTags (tags: string[]): number {
    return this.local({ tags })
  }

  /** Removes entries by exact key. */
  invalidateKeys (keys: string[]): number {
    return this.local({ keys })
  }

  /** Removes everything. */
  clear (): number {
    return this.local({ all: true })
  }

  /** Invalidates the user here and on every instance (awaits the shared layer). */
  async invalidateUserAuthorizationCache (userId: string): Promise<number> {
    return this.invalidate({ userId })
  }

  /** Invalidates the generation here and on every instance (awaits the shared layer). */
  async invalidateGenerationAuthorizationCache (generationId: string): Promise<number> {
    return this.invalidate({ generationId })
  }
}
