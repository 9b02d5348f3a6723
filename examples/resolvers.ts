/**
 * The example's authorization service: the rules live in SQL, as a real
 * service's would, and each resolver is exactly one of those queries,
 * answering the plugin's Decision shape (or null for "no access").
 *
 * - generation: any member of the project's team may read; role member or
 *   above may also write. Tagged with its project and team, so invalidating
 *   `project:<id>` or `team:<id>` reaches it.
 * - project: the same rule on the project itself.
 * - team: the caller's role in the team (route checks rank it: team
 *   settings need admin or owner).
 * - profile: the caller's own user row.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { BatchResolver, Decision, Resolver, ResolverSpec } from '../lib/index.js'
import type { Database } from './db.js'
import { isCanonicalUuid } from './ids.js'

export interface ResolverOptions {
  /**
   * SIMULATED extra backend latency in ms, added before every query (for
   * performance runs: an embedded database answers in microseconds, a real
   * authorization service in tens of milliseconds). Honors `ctx.signal`:
   * a load the plugin times out stops waiting. Default 0 (none).
   */
  latencyMs?: number
  /**
   * Give `generation` and `project` their batch form (`many`: one query for
   * many ids, `= ANY($1)`). Default true; false keeps only `one` (batch
   * checks then fan out), for comparisons.
   */
  batch?: boolean
  /** Told of every backend call (one query) and the ids it is asked about: perf counts backend calls with it. */
  onCall?: (kind: ExampleKind, ids: readonly string[]) => void
}

export type ExampleKind = 'generation' | 'project' | 'team' | 'profile'

/** Access levels by role, decided by the database (`roles.rank`): read for all, write from member up. */
const ACCESS_SQL = `CASE WHEN r.rank >= (SELECT rank FROM roles WHERE name = 'member')
  THEN ARRAY['read', 'write'] ELSE ARRAY['read'] END`

const GENERATION_SQL = (where: string): string => `SELECT g.id, p.id AS project_id, p.team_id, g.media_urls, ${ACCESS_SQL} AS access
    FROM generations g
    JOIN projects p ON p.id = g.project_id
    JOIN team_members m ON m.team_id = p.team_id AND m.user_id = $2
    JOIN roles r ON r.name = m.role
    WHERE ${where}`
const PROJECT_SQL = (where: string): string => `SELECT p.id, p.team_id, ${ACCESS_SQL} AS access
    FROM projects p
    JOIN team_members m ON m.team_id = p.team_id AND m.user_id = $2
    JOIN roles r ON r.name = m.role
    WHERE ${where}`

export const AUTHZ_SQL = {
  generation: GENERATION_SQL('g.id = $1'),
  project: PROJECT_SQL('p.id = $1'),
  team: 'SELECT m.role FROM team_members m WHERE m.team_id = $1 AND m.user_id = $2',
  profile: 'SELECT u.id, u.name, u.email FROM users u WHERE u.id = $1',
  /** The batch forms: every id of `$1` (a uuid[]) the user may see, one row each; an id without a row is "no access". */
  generations: GENERATION_SQL('g.id = ANY($1::uuid[])'),
  projects: PROJECT_SQL('p.id = ANY($1::uuid[])')
} as const

interface GenerationRow { id: string, project_id: string, team_id: string, media_urls: string[], access: string[] }
interface ProjectRow { id: string, team_id: string, access: string[] }

const generationDecision = (row: GenerationRow): Decision =>
  ({ granted: true, access: row.access, mediaUrls: row.media_urls, tags: [`project:${row.project_id}`, `team:${row.team_id}`] })
const projectDecision = (row: ProjectRow): Decision => ({ granted: true, access: row.access, tags: [`team:${row.team_id}`] })

/** The resolvers over `db`: generation and project also in batch form (unless `batch: false`). */
export function createResolvers (db: Database, options: ResolverOptions = {}): Record<ExampleKind, ResolverSpec> {
  const latencyMs = options.latencyMs ?? 0
  if (!Number.isFinite(latencyMs) || latencyMs < 0) throw new TypeError(`latencyMs must be a number >= 0, got ${String(latencyMs)}`)
  const onCall = options.onCall

  /**
   * Runs one authorization query. Only canonical UUIDs are asked about: any
   * other id answers "no access" without a query. The database would read an
   * uppercase alias as the same row, but the cache would keep its grant under
   * a key that revoking the canonical id never reaches; so a route that
   * forgets to make its ids canonical (./ids.ts) fails closed, not open.
   */
  async function run<R> (kind: ExampleKind, signal: AbortSignal, sql: string, ids: string[], userId: string): Promise<R[]> {
    onCall?.(kind, ids)
    if (latencyMs > 0) await sleep(latencyMs, undefined, { signal }) // simulated backend latency
    const canonical = ids.filter(isCanonicalUuid)
    if (canonical.length === 0 || !isCanonicalUuid(userId)) return []
    const params = sql === AUTHZ_SQL.profile ? [userId] : [sql === AUTHZ_SQL.generations || sql === AUTHZ_SQL.projects ? canonical : canonical[0], userId]
    const { rows } = await db.query<R>(sql, params)
    return rows
  }

  /** One query for many ids: id -> Decision, and ids without a row left out (no access). */
  function many<R extends { id: string }> (kind: ExampleKind, sql: string, decide: (row: R) => Decision): BatchResolver {
    return async (ctx) => {
      const rows = await run<R>(kind, ctx.signal, sql, ctx.ids, ctx.userId)
      return new Map(rows.map((row) => [row.id, decide(row)]))
    }
  }

  const generation: Resolver = async (ctx) => {
    const [row] = await run<GenerationRow>('generation', ctx.signal, AUTHZ_SQL.generation, [ctx.id], ctx.userId)
    return row === undefined ? null : generationDecision(row)
  }
  const project: Resolver = async (ctx) => {
    const [row] = await run<ProjectRow>('project', ctx.signal, AUTHZ_SQL.project, [ctx.id], ctx.userId)
    return row === undefined ? null : projectDecision(row)
  }
  const batch = options.batch ?? true
  return {
    generation: batch ? { one: generation, many: many('generation', AUTHZ_SQL.generations, generationDecision) } : generation,
    project: batch ? { one: project, many: many('project', AUTHZ_SQL.projects, projectDecision) } : project,
    async team (ctx): Promise<Decision | null> {
      const [row] = await run<{ role: string }>('team', ctx.signal, AUTHZ_SQL.team, [ctx.id], ctx.userId)
      return row === undefined ? null : { granted: true, role: row.role }
    },
    async profile (ctx): Promise<Decision | null> {
      const [row] = await run<{ id: string, name: string, email: string }>('profile', ctx.signal, AUTHZ_SQL.profile, [ctx.userId], ctx.userId)
      return row === undefined ? null : { granted: true, id: row.id, name: row.name, email: row.email }
    }
  }
}

/** The single-id form of a resolver (`one`, or the function itself): for calling the service directly, without the cache. */
export function single (resolver: ResolverSpec): Resolver {
  if (typeof resolver === 'function') return resolver
  if (resolver.one === undefined) throw new TypeError('this resolver has no single-id form')
  return resolver.one
}
