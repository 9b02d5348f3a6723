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
import type { Decision, Resolver, ResolverContext } from '../lib/index.js'
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
}

export type ExampleKind = 'generation' | 'project' | 'team' | 'profile'

/** Access levels by role, decided by the database (`roles.rank`): read for all, write from member up. */
const ACCESS_SQL = `CASE WHEN r.rank >= (SELECT rank FROM roles WHERE name = 'member')
  THEN ARRAY['read', 'write'] ELSE ARRAY['read'] END`

export const AUTHZ_SQL = {
  generation: `SELECT p.id AS project_id, p.team_id, g.media_urls, ${ACCESS_SQL} AS access
    FROM generations g
    JOIN projects p ON p.id = g.project_id
    JOIN team_members m ON m.team_id = p.team_id AND m.user_id = $2
    JOIN roles r ON r.name = m.role
    WHERE g.id = $1`,
  project: `SELECT p.team_id, ${ACCESS_SQL} AS access
    FROM projects p
    JOIN team_members m ON m.team_id = p.team_id AND m.user_id = $2
    JOIN roles r ON r.name = m.role
    WHERE p.id = $1`,
  team: 'SELECT m.role FROM team_members m WHERE m.team_id = $1 AND m.user_id = $2',
  profile: 'SELECT u.id, u.name, u.email FROM users u WHERE u.id = $1'
} as const

/** The four resolvers over `db`. */
export function createResolvers (db: Database, options: ResolverOptions = {}): Record<ExampleKind, Resolver> {
  const latencyMs = options.latencyMs ?? 0
  if (!Number.isFinite(latencyMs) || latencyMs < 0) throw new TypeError(`latencyMs must be a number >= 0, got ${String(latencyMs)}`)

  /**
   * Runs one authorization query. Only canonical UUIDs are asked about: any
   * other id answers "no access" without a query. The database would read an
   * uppercase alias as the same row, but the cache would keep its grant under
   * a key that revoking the canonical id never reaches; so a route that
   * forgets to make its ids canonical (./ids.ts) fails closed, not open.
   */
  async function run<R> (ctx: ResolverContext, sql: string, params: string[]): Promise<R | undefined> {
    if (latencyMs > 0) await sleep(latencyMs, undefined, { signal: ctx.signal }) // simulated backend latency
    if (!params.every(isCanonicalUuid)) return undefined
    const { rows } = await db.query<R>(sql, params)
    return rows[0]
  }

  return {
    async generation (ctx): Promise<Decision | null> {
      const row = await run<{ project_id: string, team_id: string, media_urls: string[], access: string[] }>(ctx, AUTHZ_SQL.generation, [ctx.id, ctx.userId])
      if (row === undefined) return null
      return { granted: true, access: row.access, mediaUrls: row.media_urls, tags: [`project:${row.project_id}`, `team:${row.team_id}`] }
    },
    async project (ctx): Promise<Decision | null> {
      const row = await run<{ team_id: string, access: string[] }>(ctx, AUTHZ_SQL.project, [ctx.id, ctx.userId])
      if (row === undefined) return null
      return { granted: true, access: row.access, tags: [`team:${row.team_id}`] }
    },
    async team (ctx): Promise<Decision | null> {
      const row = await run<{ role: string }>(ctx, AUTHZ_SQL.team, [ctx.id, ctx.userId])
      return row === undefined ? null : { granted: true, role: row.role }
    },
    async profile (ctx): Promise<Decision | null> {
      const row = await run<{ id: string, name: string, email: string }>(ctx, AUTHZ_SQL.profile, [ctx.userId])
      return row === undefined ? null : { granted: true, id: row.id, name: row.name, email: row.email }
    }
  }
}
