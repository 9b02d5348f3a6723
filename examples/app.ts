/**
 * The example service: a generative-media API whose authorization checks
 * go through fastify-authz-cache, with the rules in SQL (./resolvers.ts)
 * over PGlite or PostgreSQL (./db.ts).
 *
 * `buildExampleApp()` returns the app (ready, not listening), the database,
 * sample tokens and the sample data's ids. examples/server.ts runs it;
 * test/example-e2e.test.ts drives it over HTTP.
 */
import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import authzCache, { type AuthzCacheOptions } from '../lib/index.js'
import { ROLES, SEED_IDS, exampleUuid, openDatabase, type Database, type SeedIds } from './db.js'
import { canonicalUserId, canonicalUuidBody, canonicalUuidParams } from './ids.js'
import { createResolvers, type ResolverOptions } from './resolvers.js'

/** Signs the sample tokens unless `jwtSecret` is given. Development only: it is in the source. */
export const DEV_JWT_SECRET = 'dev-only-secret-do-not-use-in-production-0123456789'

/** The `sub` of the sample admin token: user ids are UUIDs, and this one is no row in `users`. */
export const ADMIN_SUBJECT = exampleUuid('user', 0)

export interface ExampleAppOptions {
  /** PostgreSQL connection string; absent: embedded PGlite. */
  databaseUrl?: string
  /** PostgreSQL schema for the example's tables. Default `authz_example`. */
  schema?: string
  /** Recreate and re-seed the schema even when it exists (./db.ts). Default false. */
  reseed?: boolean
  /** Drop that schema again when the database is closed (tests). Default false. */
  dropSchemaOnClose?: boolean
  /** HS256 secret of @fastify/jwt. Default DEV_JWT_SECRET. */
  jwtSecret?: string
  /** Fastify's `logger` option. Default false. */
  logger?: FastifyServerOptions['logger']
  /** Redis for L2 and the invalidation bus, passed to the plugin as `redis: { url }`. */
  redisUrl?: string
  /** SIMULATED extra latency of every authorization query, in ms (see ./resolvers.ts). */
  latencyMs?: number
  /** The plugin's preset. Default 'development'. */
  preset?: 'development' | 'production'
  /** Overrides the preset's `warmingEnabled` (predictive warming, refresh-ahead). */
  warmingEnabled?: boolean
  /** Batch resolvers (`many`) for generation and project (./resolvers.ts). Default true. */
  batch?: boolean
  /** Told of every backend query (./resolvers.ts `onCall`). */
  onCall?: ResolverOptions['onCall']
}

export interface ExampleApp {
  app: FastifyInstance
  db: Database
  /** Sample JWTs: alice, bob, carol, dave, erin, and `admin` (scope `authz:admin`). */
  tokens: Record<'alice' | 'bob' | 'carol' | 'dave' | 'erin' | 'admin', string>
  ids: SeedIds
}

const uuid = { type: 'string', format: 'uuid' } as const
/** A params schema whose UUID params ./ids.ts makes canonical (or refuses with 400) before the authz check. */
function uuidParams (...names: string[]): { type: 'object', required: string[], properties: Record<string, typeof uuid> } {
  return { type: 'object', required: names, properties: Object.fromEntries(names.map((name) => [name, uuid])) }
}

interface GenerationParams { generationId: string }
interface ProjectParams { projectId: string }
interface TeamParams { teamId: string }
interface MemberParams { teamId: string, userId: string }

function notFound (message: string): { statusCode: 404, error: 'Not Found', message: string } {
  return { statusCode: 404, error: 'Not Found', message }
}

/**
 * Resolves once every notification the triggers sent so far was applied
 * (after bulk writes: rows just written notify too, and one landing after a
 * check cached a decision would drop it). PostgreSQL delivers them in commit
 * order, so once a marker notification committed after them has removed its
 * marker entry, they all have been. Rejects after `timeoutMs`.
 */
export async function notificationsApplied (app: FastifyInstance, db: Database, timeoutMs = 10_000): Promise<void> {
  const marker = randomUUID()
  app.authz.setGenerationAccess(marker, marker, { granted: true })
  await db.query('SELECT pg_notify($1, $2)', [db.feed.channel, JSON.stringify({ generationId: marker })])
  const until = Date.now() + timeoutMs
  while (app.authz.getGenerationAccess(marker, marker).hit) {
    if (Date.now() > until) throw new Error(`the marker notification was not applied within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** Builds the example app on a fresh, seeded database. The caller closes both (`app.close()`, `db.close()`). */
export async function buildExampleApp (opts: ExampleAppOptions = {}): Promise<ExampleApp> {
  const db = await openDatabase({ databaseUrl: opts.databaseUrl, schema: opts.schema, reseed: opts.reseed, dropSchemaOnClose: opts.dropSchemaOnClose })
  const app = Fastify({ logger: opts.logger ?? false })
  try {
    // fast-jwt's verify cache: a repeated token is not verified again, so a cached check costs microseconds.
    await app.register(fastifyJwt, { secret: opts.jwtSecret ?? DEV_JWT_SECRET, verify: { cache: true } })
    const authzOptions: AuthzCacheOptions = {
      preset: opts.preset ?? 'development',
      resolvers: createResolvers(db, { latencyMs: opts.latencyMs, batch: opts.batch, onCall: opts.onCall }),
      // The token's sub in canonical form (./ids.ts); a sub that is not a UUID is a 401.
      getUserId: canonicalUserId
    }
    if (opts.warmingEnabled !== undefined) authzOptions.warmingEnabled = opts.warmingEnabled
    if (opts.redisUrl !== undefined && opts.redisUrl !== '') authzOptions.redis = { url: opts.redisUrl }
    // Invalidations from the database itself: the triggers of ./db.ts notify at commit, whoever wrote.
    authzOptions.postgres = db.feed
    await app.register(authzCache, authzOptions)
    // The admin routes are on at /_authz (default guard: a JWT with scope 'authz:admin').

    // Ids the route schemas declare `format: 'uuid'` are made canonical before any check reads them (./ids.ts).
    // App-level onRequest hooks run before the route-level one that the plugin adds for `config.authz`.
    app.addHook('onRequest', canonicalUuidParams)
    app.addHook('preValidation', canonicalUuidBody)
    routes(app, db)
    await app.ready()
  } catch (error) {
    await app.close()
    await db.close()
    throw error
  }

  const sign = (sub: string, claims: Record<string, unknown> = {}): string => app.jwt.sign({ sub, ...claims }, { expiresIn: '12h' })
  const { users } = SEED_IDS
  const tokens = {
    alice: sign(users.alice, { name: 'Alice' }),
    bob: sign(users.bob, { name: 'Bob' }),
    carol: sign(users.carol, { name: 'Carol' }),
    dave: sign(users.dave, { name: 'Dave' }),
    erin: sign(users.erin, { name: 'Erin' }),
    admin: sign(ADMIN_SUBJECT, { scope: 'authz:admin' })
  }
  return { app, db, tokens, ids: SEED_IDS }
}

function routes (app: FastifyInstance, db: Database): void {
  // Media URLs come from the cached decision: a cache hit serves this route without a query.
  app.get<{ Params: GenerationParams }>('/generations/:generationId', {
    config: { authz: { generation: 'generationId', access: 'read' } },
    schema: { params: uuidParams('generationId') }
  }, async (request) => {
    const id = request.params.generationId
    const decision = await request.authz.generationAccess(id)
    return { id, access: decision.access, mediaUrls: decision.mediaUrls }
  })

  app.put<{ Params: GenerationParams, Body: { prompt: string } }>('/generations/:generationId', {
    config: { authz: { generation: 'generationId', access: 'write' } },
    schema: {
      params: uuidParams('generationId'),
      body: { type: 'object', additionalProperties: false, required: ['prompt'], properties: { prompt: { type: 'string', minLength: 1, maxLength: 2000 } } }
    }
  }, async (request, reply) => {
    const { rows } = await db.query(
      'UPDATE generations SET prompt = $2, updated_at = now() WHERE id = $1 RETURNING id, project_id, prompt, status',
      [request.params.generationId, request.body.prompt])
    if (rows.length === 0) return reply.code(404).send(notFound('no such generation'))
    const row = rows[0]
    return { id: row.id, projectId: row.project_id, prompt: row.prompt, status: row.status }
  })

  app.get<{ Params: ProjectParams }>('/projects/:projectId', {
    config: { authz: { project: 'projectId', access: 'read' } },
    schema: { params: uuidParams('projectId') }
  }, async (request, reply) => {
    const id = request.params.projectId
    const decision = await request.authz.projectAccess(id)
    const { rows } = await db.query('SELECT id, team_id, name FROM projects WHERE id = $1', [id])
    if (rows.length === 0) return reply.code(404).send(notFound('no such project'))
    const generations = await db.query('SELECT id, status FROM generations WHERE project_id = $1 ORDER BY created_at, id', [id])
    return { id, name: rows[0].name, teamId: rows[0].team_id, access: decision.access, generations: generations.rows }
  })

  // A list page: the project check on the route, then one batch check for the page's generations
  // (one `many` query for the misses, each id fenced on its own), keeping those the caller may read.
  app.get<{ Params: ProjectParams, Querystring: { limit: number, offset: number } }>('/projects/:projectId/generations', {
    config: { authz: { project: 'projectId', access: 'read' } },
    schema: {
      params: uuidParams('projectId'),
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          limit: { type: 'integer', minimum: 1, maximum: 100, default: 50 },
          offset: { type: 'integer', minimum: 0, maximum: 100_000, default: 0 }
        }
      }
    }
  }, async (request) => {
    const { limit, offset } = request.query
    const { rows } = await db.query<{ id: string, status: string }>(
      'SELECT id, status FROM generations WHERE project_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3',
      [request.params.projectId, limit, offset])
    const visible = new Set(await request.authz.filter('generation', rows.map((row) => row.id), { access: 'read' }))
    return { projectId: request.params.projectId, generations: rows.filter((row) => visible.has(row.id)) }
  })

  app.put<{ Params: TeamParams, Body: Record<string, unknown> }>('/teams/:teamId/settings', {
    config: { authz: { team: 'teamId', role: 'admin' } },
    schema: {
      params: uuidParams('teamId'),
      body: {
        type: 'object',
        additionalProperties: false,
        minProperties: 1,
        properties: { defaultModel: { type: 'string', maxLength: 100 }, watermark: { type: 'boolean' } }
      }
    }
  }, async (request) => {
    const { rows } = await db.query('UPDATE teams SET settings = settings || $2::jsonb WHERE id = $1 RETURNING settings',
      [request.params.teamId, JSON.stringify(request.body)])
    return { ok: true, settings: rows[0]?.settings }
  })

  // The project id is in the body: checked in a preHandler, after the body is parsed, made canonical and validated.
  app.post<{ Body: { projectId: string, prompt: string } }>('/generations', {
    schema: {
      body: {
        type: 'object',
        additionalProperties: false,
        required: ['projectId', 'prompt'],
        properties: { projectId: uuid, prompt: { type: 'string', minLength: 1, maxLength: 2000 } }
      }
    },
    preHandler: app.authz.require({ project: (req) => (req.body as { projectId?: string } | undefined)?.projectId, access: 'write' })
  }, async (request, reply) => {
    const { rows } = await db.query(
      `INSERT INTO generations (id, project_id, created_by, prompt, status)
       VALUES ($1, $2, $3, $4, 'queued') RETURNING id, project_id, prompt, status, media_urls`,
      [randomUUID(), request.body.projectId, request.authz.userId, request.body.prompt])
    const row = rows[0]
    return reply.code(201).send({ id: row.id, projectId: row.project_id, prompt: row.prompt, status: row.status, mediaUrls: row.media_urls })
  })

  app.get('/me', async (request, reply) => {
    const profile = await request.authz.profile() // authenticates (401 without a valid token), cached
    if (profile.granted !== true) return reply.code(404).send(notFound('no such user'))
    return profile
  })

  // Membership changes take effect at once: the database first, then the user's cached decisions go.
  const memberSchema = { params: uuidParams('teamId', 'userId') }

  /** An admin manages members; granting, changing or removing an owner takes an owner. */
  async function requireOwnerFor (request: FastifyRequest, teamId: string, userId: string, newRole: string | undefined): Promise<string | undefined> {
    const { rows } = await db.query<{ role: string }>('SELECT role FROM team_members WHERE team_id = $1 AND user_id = $2', [teamId, userId])
    const current = rows[0]?.role
    if (newRole === 'owner' || current === 'owner') await request.authz.check({ team: teamId, role: 'owner' })
    return current
  }

  /**
   * The membership change is committed. The trigger on `team_members`
   * (./db.ts) already revokes the user's cached decisions on every instance
   * at commit, as it does for a change made by psql or another service. This
   * call is a belt kept on purpose: it answers once every instance has
   * applied the revocation (with Redis, their acknowledgements), so the
   * caller's next request sees the change whatever instance it lands on,
   * without waiting for the notification. When Redis does not take the revocation in time, it is
   * already applied on this instance and stays queued, retried until Redis
   * takes it; the change happened, so the caller gets 200 with
   * `propagation: 'queued'` rather than a 503 inviting a retry that would
   * find nothing to change.
   */
  async function revokeUser (request: FastifyRequest, userId: string): Promise<{ invalidated?: number, propagation?: 'queued' }> {
    try {
      return { invalidated: await app.authz.invalidateUserAuthorizationCache(userId) }
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'FST_AUTHZ_BUS_FAILED') throw error
      request.log.warn({ err: error, userId }, 'membership changed; the revocation is applied here and queued for the other instances')
      return { propagation: 'queued' }
    }
  }

  app.put<{ Params: MemberParams, Body: { role: string } }>('/teams/:teamId/members/:userId', {
    config: { authz: { team: 'teamId', role: 'admin' } },
    schema: {
      ...memberSchema,
      body: { type: 'object', additionalProperties: false, required: ['role'], properties: { role: { type: 'string', enum: [...ROLES] } } }
    }
  }, async (request, reply) => {
    const { teamId, userId } = request.params
    await requireOwnerFor(request, teamId, userId, request.body.role)
    const { rows } = await db.query(
      `INSERT INTO team_members (team_id, user_id, role) SELECT $1, u.id, $3 FROM users u WHERE u.id = $2
       ON CONFLICT (team_id, user_id) DO UPDATE SET role = EXCLUDED.role RETURNING role`,
      [teamId, userId, request.body.role])
    if (rows.length === 0) return reply.code(404).send(notFound('no such user'))
    return { ok: true, role: rows[0].role, ...await revokeUser(request, userId) }
  })

  app.delete<{ Params: MemberParams }>('/teams/:teamId/members/:userId', {
    config: { authz: { team: 'teamId', role: 'admin' } },
    schema: memberSchema
  }, async (request, reply) => {
    const { teamId, userId } = request.params
    if (await requireOwnerFor(request, teamId, userId, undefined) === undefined) {
      return reply.code(404).send(notFound('not a member of this team'))
    }
    await db.query('DELETE FROM team_members WHERE team_id = $1 AND user_id = $2', [teamId, userId])
    return { ok: true, ...await revokeUser(request, userId) }
  })
}
