/**
 * Invalidation: what a request touches (its plan), and removing it. Hard:
 * the entries are gone, not soft-expired; and it wins over loads in flight
 * (the fence itself is in ./loads.ts). Tags cost time proportional to what
 * they remove, keys one lookup each, a pattern one linear pass over the keys.
 */
import { FST_AUTHZ_OPTIONS } from '../errors.js'
import { compilePattern, invalidationTags, patternProblem, type KeyPattern } from '../keys.js'
import { describe, isPlainObject } from '../options.js'
import type { InvalidationRequest } from '../types.js'
import type { Loads } from './loads.js'
import { isStringArray } from './resolver-call.js'
import type { Store } from './store.js'

export interface Plan {
  readonly all: boolean
  readonly tags: Set<string>
  readonly keys: string[]
  readonly patterns: KeyPattern[]
}

/** Validates a request (FST_AUTHZ_OPTIONS naming the field) and plans it. */
export function planInvalidation (request: InvalidationRequest): Plan {
  if (!isPlainObject(request as unknown)) throw new FST_AUTHZ_OPTIONS('invalidation', `must be an object, got ${describe(request)}`)
  for (const name of ['userId', 'generationId', 'projectId', 'teamId', 'pattern'] as const) {
    const value = request[name]
    if (value !== undefined && (typeof value !== 'string' || value.length === 0)) throw new FST_AUTHZ_OPTIONS(name, `must be a non-empty string, got ${describe(value)}`)
  }
  for (const name of ['tags', 'keys'] as const) {
    const value = request[name]
    if (value !== undefined && (!isStringArray(value) || value.some((v) => v.length === 0))) throw new FST_AUTHZ_OPTIONS(name, 'must be an array of non-empty strings')
  }
  if (request.all !== undefined && typeof request.all !== 'boolean') throw new FST_AUTHZ_OPTIONS('all', `must be a boolean, got ${describe(request.all)}`)
  const problem = request.pattern === undefined ? undefined : patternProblem(request.pattern)
  if (problem !== undefined) throw new FST_AUTHZ_OPTIONS('pattern', problem)
  return {
    all: request.all === true,
    tags: invalidationTags(request),
    keys: request.keys ?? [],
    patterns: request.pattern === undefined ? [] : [compilePattern(request.pattern)]
  }
}

/** Whether the plan reaches an entry or a load with this key and these tags. */
export function touches (plan: Plan, key: string, tags: string[]): boolean {
  for (const tag of tags) if (plan.tags.has(tag)) return true
  if (plan.keys.includes(key)) return true
  for (const pattern of plan.patterns) if (pattern.test(key)) return true
  return false
}

/** Fences the loads the plan reaches, removes its entries, and answers how many. */
export function applyPlan (plan: Plan, store: Store, loads: Loads): number {
  const seq = loads.next()
  if (plan.all) {
    loads.fenceAll(seq)
    return store.clear()
  }
  loads.fenceTouched(seq, plan.tags, (key, tags) => touches(plan, key, tags))
  let removed = 0
  for (const tag of plan.tags) {
    for (const entry of store.tagged(tag)) if (store.remove(entry, 'invalidate')) removed++
  }
  for (const key of plan.keys) {
    const entry = store.peek(key)
    if (entry !== undefined && store.remove(entry, 'invalidate')) removed++
  }
  for (const pattern of plan.patterns) {
    for (const entry of store.entries()) {
      if (pattern.test(entry.key) && store.remove(entry, 'invalidate')) removed++
    }
  }
  return removed
}
