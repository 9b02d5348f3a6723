/**
 * Route checks: compiled once at boot (`onRoute`, `app.authz.require`), run
 * per request. The hit path is callback-based and synchronous: a request
 * whose checks all hit the cache costs no promise, no key string and no
 * closure beyond what @fastify/jwt itself allocates.
 */
import type { FastifyRequest } from 'fastify'
import type { AuthzCache, KindHandle } from './cache.js'
import {
  FST_AUTHZ_BAD_ID,
  FST_AUTHZ_FORBIDDEN,
  FST_AUTHZ_ROUTE_CONFIG,
  FST_AUTHZ_UNAUTHENTICATED
} from './errors.js'
import { describe, isPlainObject } from './options.js'
import type { Decision } from './types.js'

type Done = (error?: Error) => void
/** A compiled check list as a callback-style hook: `(request, reply, done)`. */
export type CheckHook = (request: FastifyRequest, reply: unknown, done: Done) => void
/** What this package uses of @fastify/jwt, typed here so its augmentation is not forced on every user. */
interface JwtRequest { jwtVerify: (options: undefined, callback: (error: Error | null) => void) => void }
type IdSource = string | ((request: FastifyRequest) => unknown)

/** One check as a route or `require()` gives it: exactly one kind, plus access and/or role. */
interface CheckInput {
  access?: string
  role?: string
  fresh?: boolean
  [kind: string]: IdSource | boolean | undefined
}

export interface CompiledCheck {
  readonly kind: KindHandle
  readonly kindName: string
  /** Route param holding the id, or undefined. */
  readonly param: string | undefined
  /** Extractor of the id, or undefined. */
  readonly extract: ((request: FastifyRequest) => unknown) | undefined
  readonly access: string | undefined
  readonly role: string | undefined
  /** Rank of `role` in `roles`, or -1 when the check has no role. */
  readonly roleRank: number
  readonly fresh: boolean
  /** What a 403 says was missing. */
  readonly what: string
}

const CHECK_FIELDS = new Set(['access', 'role', 'fresh'])
const PARAM_NAMES = /:([A-Za-z0-9_$]+)/g

/** Route params a Fastify path declares (`/a/:id/b/:other(^\\d+$)` -> id, other; `*` for a wildcard). */
export function routeParams (url: string): Set<string> {
  const names = new Set<string>()
  for (const match of url.matchAll(PARAM_NAMES)) names.add(match[1])
  if (url.includes('*')) names.add('*')
  return names
}

/**
 * Validates and compiles `config.authz` (an object, an array of them, or
 * `false`) against the known kinds. Throws FST_AUTHZ_ROUTE_CONFIG naming the
 * route and the field.
 */
export function compileChecks (
  where: string,
  input: unknown,
  engine: AuthzCache,
  roles: string[],
  params: Set<string> | undefined
): CompiledCheck[] {
  const list = Array.isArray(input) ? input : [input]
  if (list.length === 0) throw new FST_AUTHZ_ROUTE_CONFIG(where, 'an empty list of checks; use `false` to opt a route out')
  return list.map((check, i) => compileOne(list.length > 1 ? `${where} (check ${i})` : where, check, engine, roles, params))
}

function compileOne (where: string, check: unknown, engine: AuthzCache, roles: string[], params: Set<string> | undefined): CompiledCheck {
  const fail = (why: string): never => { throw new FST_AUTHZ_ROUTE_CONFIG(where, why) }
  if (!isPlainObject(check)) fail(`a check must be an object, got ${describe(check)}`)
  const input = check as CheckInput
  const kinds = Object.keys(input).filter((key) => !CHECK_FIELDS.has(key))
  if (kinds.length !== 1) {
    fail(kinds.length === 0
      ? `names no kind (known kinds: ${engine.kinds.join(', ')})`
      : `names ${kinds.length} kinds (${kinds.join(', ')}); a check names exactly one`)
  }
  const kindName = kinds[0]
  if (!engine.hasKind(kindName)) fail(`unknown kind or field ${JSON.stringify(kindName)} (known kinds: ${engine.kinds.join(', ')}; fields: access, role, fresh)`)
  const source = input[kindName]
  let param: string | undefined
  let extract: CompiledCheck['extract']
  if (typeof source === 'string' && source.length > 0) {
    if (params !== undefined && !params.has(source)) fail(`route param ${JSON.stringify(source)} is not in the route path`)
    param = source
  } else if (typeof source === 'function') {
    extract = source
  } else if (!(kindName === 'profile' && source === true)) {
    fail(`${kindName} must be a route param name or a function (request) => id${kindName === 'profile' ? ', or true' : ''}, got ${describe(source)}`)
  }
  if (input.access === undefined && input.role === undefined) fail('needs `access` or `role`')
  if (input.access !== undefined && (typeof input.access !== 'string' || input.access.length === 0)) fail(`access must be a non-empty string, got ${describe(input.access)}`)
  let roleRank = -1
  if (input.role !== undefined) {
    roleRank = typeof input.role === 'string' ? roles.indexOf(input.role) : -1
    if (roleRank === -1) fail(`role must be one of ${roles.join(', ')}, got ${describe(input.role)}`)
  }
  if (input.fresh !== undefined && typeof input.fresh !== 'boolean') fail(`fresh must be a boolean, got ${describe(input.fresh)}`)
  const wants = [input.access === undefined ? '' : `access '${input.access}'`, input.role === undefined ? '' : `role '${input.role}'`].filter(Boolean).join(' and ')
  return {
    kind: engine.kind(kindName),
    kindName,
    param,
    extract,
    access: input.access,
    role: input.role,
    roleRank,
    fresh: input.fresh === true,
    what: `${kindName} ${wants}`
  }
}

/** Whether a decision satisfies a requirement (SPEC section 2). */
export function satisfies (decision: Decision, access: string | undefined, roleRank: number, roles: string[]): boolean {
  if (decision.granted !== true) return false
  if (access !== undefined && Array.isArray(decision.access) && !decision.access.includes(access)) return false
  if (roleRank !== -1 && (typeof decision.role !== 'string' || roles.indexOf(decision.role) < roleRank)) return false
  return true
}

/** Establishes who the caller is: @fastify/jwt, a user function, or trust in `request.user`. */
export class Identity {
  readonly #authenticate: boolean | ((request: FastifyRequest) => unknown)
  readonly #getUserId: (request: FastifyRequest) => unknown
  readonly #maxIdLength: number

  constructor (authenticate: boolean | ((request: FastifyRequest) => unknown), getUserId: ((request: FastifyRequest) => unknown) | undefined, maxIdLength: number) {
    this.#authenticate = authenticate
    this.#getUserId = getUserId ?? defaultUserId
    this.#maxIdLength = maxIdLength
  }

  /** Calls back with the user id, or a 401. */
  ensure (request: FastifyRequest, done: (error: Error | null, userId?: string) => void): void {
    const user = (request as { user?: unknown }).user
    if (user !== undefined && user !== null) {
      this.#resolveUserId(request, done)
      return
    }
    const authenticate = this.#authenticate
    if (authenticate === true) {
      // Without options, @fastify/jwt uses its global verifier (and its cache, when enabled).
      (request as unknown as JwtRequest).jwtVerify(undefined, (error) => {
        if (error) done(unauthenticated(error))
        else this.#resolveUserId(request, done)
      })
    } else if (authenticate === false) {
      this.#resolveUserId(request, done)
    } else {
      Promise.resolve().then(() => authenticate(request)).then(
        () => this.#resolveUserId(request, done),
        (error: Error) => done(unauthenticated(error))
      )
    }
  }

  /** The promise form, for `request.authz`. */
  userId (request: FastifyRequest): Promise<string> {
    return new Promise((resolve, reject) => {
      this.ensure(request, (error, userId) => error === null ? resolve(userId as string) : reject(error))
    })
  }

  /**
   * The user id when no verification is needed (`request.user` is set, or
   * `authenticate: false`), else undefined: the synchronous fast path.
   */
  knownUserId (request: FastifyRequest): string | undefined {
    const user = (request as { user?: unknown }).user
    return (user === undefined || user === null) && this.#authenticate !== false ? undefined : this.peekUserId(request)
  }

  /** The user id if the request is already authenticated, else undefined. No verification. */
  peekUserId (request: FastifyRequest): string | undefined {
    try {
      const id = this.#getUserId(request)
      return typeof id === 'string' && id.length > 0 && id.length <= this.#maxIdLength ? id : undefined
    } catch {
      return undefined
    }
  }

  #resolveUserId (request: FastifyRequest, done: (error: Error | null, userId?: string) => void): void {
    let id: unknown
    try {
      id = this.#getUserId(request)
    } catch (error) {
      done(unauthenticated(error as Error))
      return
    }
    if (typeof id !== 'string' || id.length === 0) done(new FST_AUTHZ_UNAUTHENTICATED('no user id in the credentials'))
    // A user id goes into keys and tags like a resource id, so it is bounded like one.
    else if (id.length > this.#maxIdLength) done(new FST_AUTHZ_BAD_ID('userId', `longer than ${this.#maxIdLength} characters`))
    else done(null, id)
  }
}

function defaultUserId (request: FastifyRequest): unknown {
  return ((request as { user?: { sub?: unknown } | null }).user)?.sub
}

/** A 401 FST_AUTHZ_UNAUTHENTICATED for what @fastify/jwt (or `authenticate`) refused. */
export function unauthenticated (cause: Error): Error {
  if ((cause as { code?: string } | null)?.code === 'FST_AUTHZ_UNAUTHENTICATED') return cause
  // @fastify/jwt's messages name what was wrong with the token, never the token itself.
  const message = typeof cause?.message === 'string' && cause.message.length > 0 ? cause.message : 'invalid credentials'
  return new FST_AUTHZ_UNAUTHENTICATED(message, { cause })
}

/** Runs compiled checks for a request: the `onRequest` hook and the `preHandler` of `require()`. */
export class CheckRunner {
  readonly #engine: AuthzCache
  readonly #identity: Identity
  readonly #roles: string[]
  readonly #maxIdLength: number

  constructor (engine: AuthzCache, identity: Identity, roles: string[]) {
    this.#engine = engine
    this.#identity = identity
    this.#roles = roles
    this.#maxIdLength = engine.options.maxIdLength
  }

  /** A hook running `checks`: `(request, reply, done)`. */
  hook (checks: CompiledCheck[]): CheckHook {
    const run = (request: FastifyRequest, done: Done): void => {
      const userId = this.#identity.knownUserId(request)
      if (userId !== undefined) {
        this.#from(request, checks, 0, userId, done)
        return
      }
      this.#identity.ensure(request, (error, id) => {
        if (error !== null) done(error)
        else this.#from(request, checks, 0, id as string, done)
      })
    }
    return function authzCheck (request, _reply, done) { run(request, done) }
  }

  #from (request: FastifyRequest, checks: CompiledCheck[], start: number, userId: string, done: Done): void {
    for (let i = start; i < checks.length; i++) {
      const check = checks[i]
      const id = check.param !== undefined
        ? (request.params as Record<string, unknown>)[check.param]
        : check.extract !== undefined ? safeExtract(check, request) : userId
      if (typeof id !== 'string' || id.length === 0 || id.length > this.#maxIdLength) {
        done(new FST_AUTHZ_BAD_ID(check.kindName, typeof id === 'string' && id.length > 0
          ? `longer than ${this.#maxIdLength} characters`
          : `expected a non-empty string${check.param === undefined ? '' : ` in param ${check.param}`}`))
        return
      }
      const value = check.fresh ? undefined : this.#engine.lookup(check.kind, id, userId)
      if (value === undefined) {
        this.#engine.load(check.kind, id, userId, check.fresh).then((loaded) => {
          if (satisfies(loaded as Decision, check.access, check.roleRank, this.#roles)) this.#from(request, checks, i + 1, userId, done)
          else done(new FST_AUTHZ_FORBIDDEN(`${check.what} required`))
        }, done)
        return
      }
      if (!satisfies(value as Decision, check.access, check.roleRank, this.#roles)) {
        done(new FST_AUTHZ_FORBIDDEN(`${check.what} required`))
        return
      }
    }
    done()
  }
}

function safeExtract (check: CompiledCheck, request: FastifyRequest): unknown {
  try {
    return (check.extract as (request: FastifyRequest) => unknown)(request)
  } catch {
    return undefined
  }
}
