/**
 * Admin routes: `GET {prefix}/stats` (JSON, or Prometheus text with
 * `Accept: text/plain`) and `POST {prefix}/invalidate`, behind a guard.
 * Never open by default: without `admin.authorize`, a verified JWT whose
 * `scope` claim holds `authz:admin` is required.
 */
import { Ajv, type ValidateFunction } from 'ajv'
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchemaValidationError } from 'fastify'
import type { AuthzCache } from './cache.js'
import { unauthenticated } from './checks.js'
import { FST_AUTHZ_BAD_INVALIDATION, FST_AUTHZ_FORBIDDEN } from './errors.js'
import { MAX_PATTERN_LENGTH, MAX_PATTERN_STARS } from './keys.js'
import { prometheusText } from './metrics.js'
import { DEFAULT_ADMIN_SCOPE, type AdminOptions } from './options.js'
import type { InvalidationRequest } from './types.js'

const MAX_LIST = 1000
const MAX_STRING = 1024

const nonEmpty = { type: 'string', minLength: 1, maxLength: MAX_STRING }
const list = { type: 'array', minItems: 1, maxItems: MAX_LIST, items: nonEmpty }

export const invalidateBodySchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    userId: nonEmpty,
    generationId: nonEmpty,
    projectId: nonEmpty,
    teamId: nonEmpty,
    tags: list,
    // Each group starts with exactly one '*', so this check is itself linear.
    pattern: { type: 'string', minLength: 1, maxLength: MAX_PATTERN_LENGTH, pattern: `^[^*]*(?:\\*[^*]*){0,${MAX_PATTERN_STARS}}$` },
    keys: list,
    all: { const: true }
  }
} as const

const counters = {
  hits: { type: 'integer' },
  misses: { type: 'integer' },
  hitRatePercent: { type: 'number' }
}

const statsSchema = {
  type: 'object',
  properties: {
    hits: { type: 'integer' },
    misses: { type: 'integer' },
    hitRatePercent: { type: 'number' },
    averageAccessTimeMs: { type: 'number' },
    p99AccessTimeMs: { type: 'number' },
    totalEntries: { type: 'integer' },
    totalSizeMb: { type: 'number' },
    maxEntries: { type: 'integer' },
    maxSizeMb: { type: 'number' },
    evictions: { type: 'integer' },
    expirations: { type: 'integer' },
    invalidations: { type: 'integer' },
    loads: { type: 'integer' },
    coalesced: { type: 'integer' },
    loaderErrors: { type: 'integer' },
    loaderTimeouts: { type: 'integer' },
    batches: { type: 'integer' },
    warming: {
      type: 'object',
      properties: {
        predicted: { type: 'integer' },
        used: { type: 'integer' },
        wasted: { type: 'integer' },
        bytes: { type: 'integer' }
      }
    },
    byKind: { type: 'object', additionalProperties: { type: 'object', properties: counters } },
    performanceTargets: {
      type: 'object',
      properties: {
        targetAccessTimeMs: { type: 'number' },
        targetHitRatePercent: { type: 'number' },
        meetingAccessTimeTarget: { type: 'boolean' },
        meetingHitRateTarget: { type: 'boolean' }
      }
    },
    eviction: {
      type: 'object',
      properties: {
        policy: { type: 'string' },
        windowEntries: { type: 'integer' },
        admitted: { type: 'integer' },
        rejected: { type: 'integer' },
        sketchResets: { type: 'integer' },
        sketchBytes: { type: 'integer' }
      }
    },
    postgres: {
      type: 'object',
      properties: {
        connected: { type: 'boolean' },
        received: { type: 'integer' },
        malformed: { type: 'integer' },
        outages: { type: 'integer' }
      }
    },
    redis: {
      type: 'object',
      properties: {
        connected: { type: 'boolean' },
        l2Hits: { type: 'integer' },
        l2Misses: { type: 'integer' },
        l2Errors: { type: 'integer' },
        published: { type: 'integer' },
        received: { type: 'integer' },
        outages: { type: 'integer' },
        refused: { type: 'integer' },
        pending: { type: 'integer' },
        ackTimeouts: { type: 'integer' }
      }
    }
  }
}

/** Strict validation for the admin body: no type coercion, no defaults, unknown fields rejected (not stripped). */
const strictAjv = new Ajv({ allErrors: false, coerceTypes: false, removeAdditional: false, useDefaults: false, strict: true })

function formatValidation (errors: FastifySchemaValidationError[], dataVar: string): Error {
  const first = errors[0]
  const params = first.params as Record<string, unknown>
  let message: string
  if (first.keyword === 'additionalProperties') {
    message = `${dataVar}/${String(params.additionalProperty)} is not an allowed field (allowed: ${Object.keys(invalidateBodySchema.properties).join(', ')})`
  } else if (first.keyword === 'minProperties') {
    message = `${dataVar} must hold at least one of ${Object.keys(invalidateBodySchema.properties).join(', ')}`
  } else if (first.keyword === 'pattern' && first.instancePath === '/pattern') {
    message = `${dataVar}/pattern must hold at most ${MAX_PATTERN_STARS} '*'`
  } else if (first.keyword === 'const') {
    message = `${dataVar}${first.instancePath} must be true`
  } else {
    message = `${dataVar}${first.instancePath} ${first.message ?? 'is invalid'}`
  }
  return new FST_AUTHZ_BAD_INVALIDATION(message)
}

let bodyValidator: ValidateFunction | undefined

/**
 * Validates an invalidation from outside the admin route (a PostgreSQL
 * notification's payload) exactly as the route validates its body: the
 * request, or an FST_AUTHZ_BAD_INVALIDATION error naming the field.
 */
export function checkInvalidation (body: unknown): InvalidationRequest | Error {
  bodyValidator ??= strictAjv.compile(invalidateBodySchema)
  if (bodyValidator(body)) return body as InvalidationRequest
  return formatValidation(bodyValidator.errors as unknown as FastifySchemaValidationError[], 'payload')
}

function hasScope (user: unknown, scope: string): boolean {
  const claim = (user as { scope?: unknown } | null | undefined)?.scope
  if (typeof claim === 'string') return claim.split(' ').includes(scope)
  return Array.isArray(claim) && claim.includes(scope)
}

export interface AdminRoutesOptions {
  engine: AuthzCache
  authorize: AdminOptions['authorize']
}

/** What the default guard uses of @fastify/jwt: verify the request's token now, whatever `request.user` holds. */
interface JwtRequest { jwtVerify: () => Promise<unknown> }

/** The admin routes, registered under the prefix in their own encapsulated context. */
export async function adminRoutes (app: FastifyInstance, opts: AdminRoutesOptions): Promise<void> {
  const { engine, authorize } = opts

  app.addHook('onRequest', async function authzAdminGuard (request: FastifyRequest) {
    if (authorize !== undefined) {
      if (await authorize(request) !== true) throw new FST_AUTHZ_FORBIDDEN('not allowed to use the authz admin routes')
      return
    }
    // Never trust a `request.user` that an earlier hook set: it may come from a decoded, unverified token.
    let claims: unknown
    try {
      claims = await (request as unknown as JwtRequest).jwtVerify()
    } catch (error) {
      throw unauthenticated(error as Error)
    }
    if (!hasScope(claims, DEFAULT_ADMIN_SCOPE)) {
      throw new FST_AUTHZ_FORBIDDEN(`the token's scope must include ${DEFAULT_ADMIN_SCOPE}`)
    }
  })

  app.get('/stats', {
    config: { authz: false },
    schema: { response: { 200: statsSchema } }
  }, async function authzStats (request: FastifyRequest, reply: FastifyReply) {
    const stats = engine.getStats()
    // Media types are case-insensitive (RFC 9110).
    const accept = (request.headers.accept ?? '').toLowerCase()
    if (accept.includes('text/plain') && !accept.includes('application/json')) {
      reply.type('text/plain; version=0.0.4; charset=utf-8')
      // A string payload skips the JSON response schema.
      return reply.serializer((payload: unknown) => payload as string).send(prometheusText(stats))
    }
    return stats
  })

  app.post('/invalidate', {
    config: { authz: false },
    schema: {
      body: invalidateBodySchema,
      response: { 200: { type: 'object', properties: { invalidated: { type: 'integer' }, acknowledged: { type: 'integer' }, instances: { type: 'integer' } } } }
    },
    validatorCompiler: ({ schema }) => strictAjv.compile(schema),
    schemaErrorFormatter: formatValidation
  }, async function authzInvalidate (request: FastifyRequest) {
    const body = request.body as InvalidationRequest
    const answer = await engine.invalidateEverywhere(body, { silent: true })
    request.log.info({ authzInvalidation: body, removed: answer.invalidated, acknowledged: answer.acknowledged, instances: answer.instances }, 'authz cache invalidated')
    return answer
  })
}
