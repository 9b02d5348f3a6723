/**
 * `request.authz`: cached checks bound to one request's user. Built lazily,
 * once per request that touches it, never shared between requests.
 */
import type { FastifyRequest } from 'fastify'
import type { AuthzCache } from './cache.js'
import { satisfies, type Identity } from './checks.js'
import { FST_AUTHZ_FORBIDDEN, FST_AUTHZ_ROUTE_CONFIG } from './errors.js'
import { describe, isPlainObject } from './options.js'
import type { AuthzKind, AuthzRequestCheck, AuthzAccess } from './check-types.js'
import type { Decision, Requirement } from './types.js'

/** A requirement whose `access` is typed by `AuthzAccessLevels` when declared. */
type TypedRequirement = Omit<Requirement, 'access'> & { access?: AuthzAccess }

export class RequestAuthz {
  readonly #request: FastifyRequest
  readonly #engine: AuthzCache
  readonly #identity: Identity
  readonly #roles: string[]
  readonly #maxIdLength: number

  constructor (request: FastifyRequest, engine: AuthzCache, identity: Identity, roles: string[]) {
    this.#request = request
    this.#engine = engine
    this.#identity = identity
    this.#roles = roles
    this.#maxIdLength = engine.options.maxIdLength
  }

  /** The caller's id when the request is authenticated, else undefined (no verification here). */
  get userId (): string | undefined {
    return this.#identity.peekUserId(this.#request)
  }

  /**
   * The cached decision of `kind` for resource `id` (authenticating the
   * request first when needed). A denied or unknown resource gives
   * `{ granted: false }`. Rejects with 401, 400, or 503 when the resolver fails.
   */
  decision (kind: AuthzKind, id: string | undefined, options?: { fresh?: boolean }): Promise<Decision> {
    // Fast path: an authenticated request (route checks ran, or an earlier call) and a cache hit cost one lookup.
    const userId = this.#identity.knownUserId(this.#request)
    if (userId === undefined) return this.#authenticated(kind, id, options)
    try {
      const handle = this.#engine.kind(kind)
      const resourceId = kind === 'profile'
        ? userId
        : typeof id === 'string' && id.length > 0 && id.length <= this.#maxIdLength ? id : this.#engine.checkId(`${kind} id`, id)
      const fresh = options?.fresh === true
      if (!fresh) {
        const hit = this.#engine.lookup(handle, resourceId, userId)
        if (hit !== undefined) return Promise.resolve(hit as Decision)
      }
      return this.#engine.load(handle, resourceId, userId, fresh) as Promise<Decision>
    } catch (error) {
      return Promise.reject(error)
    }
  }

  async #authenticated (kind: AuthzKind, id: string | undefined, options?: { fresh?: boolean }): Promise<Decision> {
    const handle = this.#engine.kind(kind)
    const userId = await this.#identity.userId(this.#request)
    return this.#engine.getOrLoad(handle, userId, kind === 'profile' ? userId : id, options)
  }

  generationAccess (generationId: string, options?: { fresh?: boolean }): Promise<Decision> {
    return this.decision('generation', generationId, options)
  }

  projectAccess (projectId: string, options?: { fresh?: boolean }): Promise<Decision> {
    return this.decision('project', projectId, options)
  }

  teamRole (teamId: string, options?: { fresh?: boolean }): Promise<Decision> {
    return this.decision('team', teamId, options)
  }

  /** The caller's profile (cached). */
  profile (options?: { fresh?: boolean }): Promise<Decision> {
    return this.decision('profile', undefined, options)
  }

  /** Whether the caller holds `requirement` on the resource. */
  async can (kind: AuthzKind, id: string | undefined, requirement: TypedRequirement & { fresh?: boolean } = {}): Promise<boolean> {
    const decision = await this.decision(kind, id, requirement)
    return satisfies(decision, requirement.access, this.#rank(requirement.role), this.#roles)
  }

  /**
   * The caller's decisions on many resources of one kind: a Map id ->
   * Decision in the order of `ids` (a repeated id once). Hits come from the
   * cache; the misses are loaded in one batch call per `maxBatchSize` ids
   * (the kind's `many`), each id fenced like a single check. A denied or
   * unknown resource gives `{ granted: false }`. Rejects with 400 naming the
   * first bad id before anything is looked up, with 503 when the resolver
   * fails for any id.
   */
  async decisions (kind: AuthzKind, ids: readonly string[]): Promise<Map<string, Decision>> {
    const handle = this.#engine.kind(kind)
    const userId = this.#identity.knownUserId(this.#request) ?? await this.#identity.userId(this.#request)
    return this.#engine.getOrLoadMany(handle, userId, ids)
  }

  /**
   * The list-endpoint helper: the ids (in order, repeats kept) on which the
   * caller holds `requirement`, with the decisions loaded as `decisions()`
   * loads them. The requirement is checked before anything is loaded.
   */
  async filter (kind: AuthzKind, ids: readonly string[], requirement: TypedRequirement = {}): Promise<string[]> {
    if (!isPlainObject(requirement)) throw new FST_AUTHZ_ROUTE_CONFIG('request.authz.filter()', `the requirement must be an object, got ${describe(requirement)}`)
    const { access, role } = requirement as Requirement
    const rank = this.#rank(role)
    // Read once: the ids checked and loaded are the ids kept.
    const list = Array.isArray(ids) ? Array.from(ids) : ids
    const found = await this.decisions(kind, list)
    const kept: string[] = []
    for (const id of list) {
      if (satisfies(found.get(id) as Decision, access, rank, this.#roles)) kept.push(id)
    }
    return kept
  }

  /** The decision when the caller holds the requirement; throws 403 FST_AUTHZ_FORBIDDEN otherwise. */
  async check (check: AuthzRequestCheck): Promise<Decision> {
    const input = check as Record<string, unknown> & { access?: string, role?: string, fresh?: boolean }
    if (!isPlainObject(input)) throw new FST_AUTHZ_ROUTE_CONFIG('request.authz.check()', `a check must be an object, got ${describe(input)}`)
    const kinds = Object.keys(input).filter((key) => key !== 'access' && key !== 'role' && key !== 'fresh')
    if (kinds.length !== 1) throw new FST_AUTHZ_ROUTE_CONFIG('request.authz.check()', `a check names exactly one kind, got ${kinds.length}`)
    const kind = kinds[0]
    const id = input[kind]
    const decision = await this.decision(kind as AuthzKind, id as string, { fresh: input.fresh === true })
    if (!satisfies(decision, input.access, this.#rank(input.role), this.#roles)) {
      throw new FST_AUTHZ_FORBIDDEN(`${kind}${input.access === undefined ? '' : ` access '${input.access}'`}${input.role === undefined ? '' : ` role '${input.role}'`} required`)
    }
    return decision
  }

  #rank (role: string | undefined): number {
    if (role === undefined) return -1
    const rank = this.#roles.indexOf(role)
    if (rank === -1) throw new FST_AUTHZ_ROUTE_CONFIG('request.authz', `unknown role ${describe(role)} (roles: ${this.#roles.join(', ')})`)
    return rank
  }
}
