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
import { DEFAULT_ADMIN_SCOPE, type AdminOptions } from './options.js'
import type { CacheStats, InvalidationRequest } from './types.js'

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

/** Prometheus exposition text of the stats. */
export function prometheusText (stats: CacheStats): string {
  const lines: string[] = []
  const metric = (name: string, type: 'counter' | 'gauge', help: string, samples: Array<[string, number]>): void => {
    lines.push(`# HELP authz_cache_${name} ${help}`, `# TYPE authz_cache_${name} ${type}`)
    for (const [labels, value] of samples) lines.push(`authz_cache_${name}${labels} ${Number.isFinite(value) ? value : 0}`)
  }
  const kinds = Object.entries(stats.byKind)
  const label = (kind: string): string => `{kind="${kind.replace(/["\\\n]/g, '_')}"}`
  // Per kind only: an unlabelled total beside them would make sum() count every hit twice.
  metric('hits_total', 'counter', 'Cache hits, by kind.', kinds.map(([k, v]): [string, number] => [label(k), v.hits]))
  metric('misses_total', 'counter', 'Cache misses, by kind.', kinds.map(([k, v]): [string, number] => [label(k), v.misses]))
  metric('hit_rate_percent', 'gauge', 'Hits per lookup, in percent.', [['', stats.hitRatePercent]])
  metric('access_time_average_seconds', 'gauge', 'Mean time of a sampled cache hit.', [['', stats.averageAccessTimeMs / 1000]])
  metric('access_time_p99_seconds', 'gauge', '99th percentile of sampled cache hits.', [['', stats.p99AccessTimeMs / 1000]])
  metric('entries', 'gauge', 'Live entries.', [['', stats.totalEntries]])
  metric('entries_max', 'gauge', 'Entry cap (maxEntries).', [['', stats.maxEntries]])
  metric('size_bytes', 'gauge', 'Accounted size of the entries.', [['', Math.round(stats.totalSizeMb * 1024 * 1024)]])
  metric('size_max_bytes', 'gauge', 'Size cap (maxSizeMb).', [['', Math.round(stats.maxSizeMb * 1024 * 1024)]])
  metric('evictions_total', 'counter', 'Entries evicted to stay under a cap.', [['', stats.evictions]])
  const e = stats.eviction
  metric('admission_duels_total', 'counter', 'TinyLFU duels between the window\'s candidate and the main region\'s victim, by who stayed.', [['{outcome="admitted"}', e.admitted], ['{outcome="rejected"}', e.rejected]])
  metric('sketch_resets_total', 'counter', 'Times the TinyLFU frequency sketch halved its counters.', [['', e.sketchResets]])
  metric('expirations_total', 'counter', 'Entries removed at the end of their TTL.', [['', stats.expirations]])
  metric('invalidations_total', 'counter', 'Entries removed by invalidation.', [['', stats.invalidations]])
  metric('loads_total', 'counter', 'Resolver loads started.', [['', stats.loads]])
  metric('coalesced_total', 'counter', 'Callers that joined a load already running.', [['', stats.coalesced]])
  metric('loader_errors_total', 'counter', 'Resolver failures (denied, not cached).', [['', stats.loaderErrors]])
  metric('loader_timeouts_total', 'counter', 'Resolver timeouts (denied, not cached).', [['', stats.loaderTimeouts]])
  metric('batches_total', 'counter', 'Batch resolver calls (many ids of one user in one call).', [['', stats.batches]])
  const w = stats.warming
  metric('warming_predicted_total', 'counter', 'Decisions loaded by predictive warming.', [['', w.predicted]])
  metric('warming_used_total', 'counter', 'Predicted decisions a check then used.', [['', w.used]])
  metric('warming_wasted_total', 'counter', 'Predicted decisions that left the cache unused.', [['', w.wasted]])
  metric('warming_bytes', 'gauge', 'Accounted bytes of the predictor\'s tables (within size_max_bytes).', [['', w.bytes]])
  if (stats.redis !== undefined) {
    const r = stats.redis
    metric('redis_connected', 'gauge', 'Whether the Redis bus is connected (1) or not (0).', [['', r.connected ? 1 : 0]])
    metric('redis_l2_hits_total', 'counter', 'L1 misses served from Redis.', [['', r.l2Hits]])
    metric('redis_l2_misses_total', 'counter', 'L1 misses Redis did not have.', [['', r.l2Misses]])
    metric('redis_l2_errors_total', 'counter', 'Redis commands that failed (counted as misses).', [['', r.l2Errors]])
    metric('redis_published_total', 'counter', 'Invalidations published.', [['', r.published]])
    metric('redis_received_total', 'counter', 'Invalidations received from other instances.', [['', r.received]])
    metric('redis_outages_total', 'counter', 'Times the bus was lost (connection closed, or own heartbeat not heard).', [['', r.outages]])
    metric('redis_refused_total', 'counter', 'L2 values refused on read and L2 writes refused, because an invalidation came after their load started.', [['', r.refused]])
    metric('redis_pending', 'gauge', 'Invalidations Redis has not taken yet (retried in order).', [['', r.pending]])
    metric('redis_ack_timeouts_total', 'counter', 'Invalidations not acknowledged by every instance within ackTimeoutMs.', [['', r.ackTimeouts]])
  }
  if (stats.postgres !== undefined) {
    const p = stats.postgres
    metric('postgres_connected', 'gauge', 'Whether the PostgreSQL LISTEN connection is up (1) or not (0).', [['', p.connected ? 1 : 0]])
    metric('postgres_received_total', 'counter', 'Invalidations received from PostgreSQL.', [['', p.received]])
    metric('postgres_malformed_total', 'counter', 'PostgreSQL notifications that were not a valid invalidation (each invalidated everything).', [['', p.malformed]])
    metric('postgres_outages_total', 'counter', 'Times the PostgreSQL LISTEN connection was lost.', [['', p.outages]])
  }
  return lines.join('\n') + '\n'
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
