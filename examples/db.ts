/**
 * The example service's database: users, teams, memberships with a role,
 * projects owned by a team, and generations (prompts and their media) in a
 * project.
 *
 * Embedded by default: PGlite (PostgreSQL compiled to WebAssembly, in
 * memory, no server). With a `databaseUrl` the SAME SQL runs against
 * PostgreSQL through a `pg` Pool, inside a dedicated schema (default
 * `authz_example`) that is dropped and recreated at start, so nothing else
 * in that database is touched.
 */
import type { PostgresOptions } from '../lib/options.js'
import { TRIGGER_FUNCTION_SQL, triggerSql } from '../lib/postgres-sql.js'

/** The tiny interface the rest of the example uses, for both backends. */
export interface Database {
  query<R = Record<string, any>>(sql: string, params?: unknown[]): Promise<{ rows: R[] }>
  /** Runs several statements at once (the trigger SQL). */
  exec(sql: string): Promise<void>
  close(): Promise<void>
  /** For logs: `PGlite (in memory)` or `PostgreSQL, schema authz_example`. */
  readonly label: string
  /**
   * The plugin's `postgres` option for this database: the triggers on
   * `team_members`, `projects` and `generations` notify the channel named
   * after the schema, and every instance LISTENs on it.
   */
  readonly feed: PostgresOptions
}

export interface OpenDatabaseOptions {
  /** PostgreSQL connection string; absent: embedded PGlite. */
  databaseUrl?: string
  /** Schema holding the example's tables. Default `authz_example`. */
  schema?: string
  /**
   * Drop and recreate the schema even when it exists (its data is lost).
   * Default false: a schema that exists is used as it is, so several
   * instances can share one database and a restart keeps what changed.
   * The example server sets it from `EXAMPLE_RESEED=1`.
   */
  reseed?: boolean
  /** Drop the schema again on `close()` (PostgreSQL only; PGlite is in memory anyway). Default false. */
  dropSchemaOnClose?: boolean
  /** Insert the sample data. Default true. */
  seed?: boolean
}

export const DEFAULT_SCHEMA = 'authz_example'
export const ROLES = ['viewer', 'member', 'admin', 'owner'] as const
export type Role = typeof ROLES[number]

/** Entity kinds, the first group of the example's deterministic UUIDs. */
const KIND = { user: 0x1, team: 0x2, project: 0x3, generation: 0x4 } as const

/**
 * A deterministic UUID (version 4 shape): `0000000k-bbbb-4000-8000-nnnnnnnnnnnn`
 * for kind `k`, batch `b` (0 for the sample data) and counter `n`.
 * `uuidSql` below builds the same string in SQL.
 */
export function exampleUuid (kind: keyof typeof KIND, n: number, batch = 0): string {
  return `${KIND[kind].toString(16).padStart(8, '0')}-${batch.toString(16).padStart(4, '0')}-4000-8000-${n.toString(16).padStart(12, '0')}`
}

function uuidSql (kind: keyof typeof KIND, counter: string, batchParam: string): string {
  return `(lpad(to_hex(${KIND[kind]}), 8, '0') || '-' || lpad(to_hex(${batchParam}::int), 4, '0') || '-4000-8000-' || lpad(to_hex(${counter}), 12, '0'))::uuid`
}

/** The sample data's ids. Deterministic, so curl commands and tests can name them. */
export const SEED_IDS = Object.freeze({
  users: Object.freeze({
    alice: exampleUuid('user', 1),
    bob: exampleUuid('user', 2),
    carol: exampleUuid('user', 3),
    dave: exampleUuid('user', 4),
    erin: exampleUuid('user', 5)
  }),
  teams: Object.freeze({
    studio: exampleUuid('team', 1),
    labs: exampleUuid('team', 2)
  }),
  projects: Object.freeze({
    trailer: exampleUuid('project', 1), // team Studio
    stills: exampleUuid('project', 2), // team Studio
    research: exampleUuid('project', 3) // team Labs
  }),
  generations: Object.freeze({
    trailerShot1: exampleUuid('generation', 1),
    trailerShot2: exampleUuid('generation', 2),
    stillsHero: exampleUuid('generation', 3),
    stillsAlt: exampleUuid('generation', 4),
    researchRender1: exampleUuid('generation', 5),
    researchRender2: exampleUuid('generation', 6)
  })
})

export type SeedIds = typeof SEED_IDS

/**
 * What a changed row revokes (lib/postgres-sql.ts): a membership, the
 * user's decisions; a project, its decisions and those of its generations
 * (tagged `project:{id}` by ./resolvers.ts); a generation, its decisions.
 */
const TRIGGERS: Array<[string, Parameters<typeof triggerSql>[1], string[] | undefined]> = [
  ['team_members', { userId: 'user_id' }, undefined],
  // Renaming a project or editing a prompt changes no permission: only these columns' updates notify.
  ['projects', { projectId: 'id' }, ['id', 'team_id']],
  ['generations', { generationId: 'id' }, ['id', 'project_id']]
]

/** Schema statements, run one by one (PGlite's `query` takes one statement). */
const SCHEMA_SQL = [
  `CREATE TABLE users (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
  )`,
  `CREATE TABLE teams (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb
  )`,
  // The role ranking is data, so the authorization queries can compare ranks.
  `CREATE TABLE roles (
    name text PRIMARY KEY,
    rank int NOT NULL UNIQUE
  )`,
  'INSERT INTO roles (name, rank) VALUES (\'viewer\', 0), (\'member\', 1), (\'admin\', 2), (\'owner\', 3)',
  `CREATE TABLE team_members (
    team_id uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role text NOT NULL REFERENCES roles (name),
    PRIMARY KEY (team_id, user_id)
  )`,
  'CREATE INDEX team_members_user_idx ON team_members (user_id)',
  `CREATE TABLE projects (
    id uuid PRIMARY KEY,
    team_id uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name text NOT NULL
  )`,
  'CREATE INDEX projects_team_idx ON projects (team_id)',
  `CREATE TABLE generations (
    id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    prompt text NOT NULL,
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    media_urls text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
  )`,
  'CREATE INDEX generations_project_idx ON generations (project_id)'
]

const CDN = 'https://cdn.example.com/media'

async function seed (db: Database): Promise<void> {
  const { users, teams, projects, generations: g } = SEED_IDS
  await db.query(
    `INSERT INTO users (id, name, email) VALUES
      ($1, 'Alice', 'alice@example.com'), ($2, 'Bob', 'bob@example.com'), ($3, 'Carol', 'carol@example.com'),
      ($4, 'Dave', 'dave@example.com'), ($5, 'Erin', 'erin@example.com')`,
    [users.alice, users.bob, users.carol, users.dave, users.erin])
  await db.query('INSERT INTO teams (id, name) VALUES ($1, \'Studio\'), ($2, \'Labs\')', [teams.studio, teams.labs])
  // Studio: alice owner, erin admin, bob member, carol viewer. Labs: carol owner, alice viewer. Dave: no team.
  await db.query(
    `INSERT INTO team_members (team_id, user_id, role) VALUES
      ($1, $3, 'owner'), ($1, $6, 'admin'), ($1, $4, 'member'), ($1, $5, 'viewer'),
      ($2, $5, 'owner'), ($2, $3, 'viewer')`,
    [teams.studio, teams.labs, users.alice, users.bob, users.carol, users.erin])
  await db.query(
    `INSERT INTO projects (id, team_id, name) VALUES
      ($1, $4, 'Launch trailer'), ($2, $4, 'Brand stills'), ($3, $5, 'Research renders')`,
    [projects.trailer, projects.stills, projects.research, teams.studio, teams.labs])
  const rows: Array<[string, string, string, string, string[]]> = [
    [g.trailerShot1, projects.trailer, users.alice, 'slow dolly shot through a neon city at dawn', [`${CDN}/${g.trailerShot1}/video.mp4`, `${CDN}/${g.trailerShot1}/poster.jpg`]],
    [g.trailerShot2, projects.trailer, users.bob, 'aerial shot over a desert canyon, golden hour', [`${CDN}/${g.trailerShot2}/video.mp4`]],
    [g.stillsHero, projects.stills, users.erin, 'studio product photo of a ceramic mug, soft light', [`${CDN}/${g.stillsHero}/0.png`, `${CDN}/${g.stillsHero}/1.png`]],
    [g.stillsAlt, projects.stills, users.bob, 'the same mug on a marble table, top-down', [`${CDN}/${g.stillsAlt}/0.png`]],
    [g.researchRender1, projects.research, users.carol, 'volumetric clouds, physically based, 8k', [`${CDN}/${g.researchRender1}/render.exr`]],
    [g.researchRender2, projects.research, users.carol, 'caustics through a glass of water', [`${CDN}/${g.researchRender2}/render.exr`, `${CDN}/${g.researchRender2}/preview.webp`]]
  ]
  for (const [id, projectId, createdBy, prompt, mediaUrls] of rows) {
    await db.query(
      'INSERT INTO generations (id, project_id, created_by, prompt, status, media_urls) VALUES ($1, $2, $3, $4, \'succeeded\', $5::text[])',
      [id, projectId, createdBy, prompt, mediaUrls])
  }
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/

/** A package the example needs for `what`, or an error saying how to install it. */
async function importOrExplain<T> (name: string, what: string): Promise<T> {
  try {
    return await import(name) as T
  } catch (error) {
    throw new Error(`${what} needs the ${name} package: npm install ${name}`, { cause: error })
  }
}

/** Opens the database (PGlite, or PostgreSQL with `databaseUrl`); creates the schema and seeds it unless it exists (`reseed` recreates it). */
export async function openDatabase (options: OpenDatabaseOptions = {}): Promise<Database> {
  const schema = options.schema ?? DEFAULT_SCHEMA
  if (!SCHEMA_NAME.test(schema)) throw new TypeError(`schema must match ${SCHEMA_NAME}, got ${JSON.stringify(schema)}`)
  const db = options.databaseUrl === undefined || options.databaseUrl === ''
    ? await openPglite(schema)
    : await openPostgres(options.databaseUrl, schema, options.dropSchemaOnClose === true)
  try {
    const { rows } = await db.query('SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2', [schema, 'generations'])
    if (rows.length > 0 && options.reseed !== true) {
      // Another instance (or an earlier run) set it up: use it as it is.
      await db.query(`SET search_path TO ${schema}`)
      return db
    }
    // The same statements on both backends: a fresh schema, searched first.
    await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
    await db.query(`CREATE SCHEMA ${schema}`)
    await db.query(`SET search_path TO ${schema}`) // PGlite's one session; the pg Pool sets it per connection
    for (const statement of SCHEMA_SQL) await db.query(statement)
    // A change to a permission row, by any writer, revokes what it touches on every instance at commit.
    await db.exec(TRIGGER_FUNCTION_SQL)
    for (const [table, mapping, columns] of TRIGGERS) await db.exec(triggerSql(table, mapping, { channel: schema, columns }))
    if (options.seed !== false) await seed(db)
  } catch (error) {
    await db.close()
    throw error
  }
  return db
}

async function openPglite (schema: string): Promise<Database> {
  // Loaded on use: an installed package runs `perf` with whichever database the machine has.
  const { PGlite } = await importOrExplain<typeof import('@electric-sql/pglite')>('@electric-sql/pglite', 'the embedded database (or set DATABASE_URL)')
  const pglite = await PGlite.create()
  let closed = false
  return {
    label: 'PGlite (embedded, in memory)',
    feed: { client: pglite, channel: schema },
    async query<R> (sql: string, params?: unknown[]) {
      const result = await pglite.query<R>(sql, params as any[] | undefined)
      return { rows: result.rows }
    },
    async exec (sql: string) {
      await pglite.exec(sql)
    },
    async close () {
      if (closed) return
      closed = true
      await pglite.close()
    }
  }
}

async function openPostgres (databaseUrl: string, schema: string, dropSchemaOnClose: boolean): Promise<Database> {
  const { default: pg } = await importOrExplain<typeof import('pg')>('pg', 'DATABASE_URL')
  // Every pooled connection searches the example's schema first.
  const pool = new pg.Pool({ connectionString: databaseUrl, options: `-c search_path=${schema}`, max: 10 })
  // An idle client that loses its connection must not crash the process.
  pool.on('error', () => {})
  let closed = false
  return {
    label: `PostgreSQL, schema ${schema}`,
    feed: { connectionString: databaseUrl, channel: schema },
    async query<R> (sql: string, params?: unknown[]) {
      const result = await pool.query(sql, params)
      return { rows: result.rows as R[] }
    },
    async exec (sql: string) {
      await pool.query(sql)
    },
    async close () {
      if (closed) return
      closed = true
      try {
        if (dropSchemaOnClose) await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
      } finally {
        await pool.end()
      }
    }
  }
}

// ------------------------------------------------------------- bulk data

export interface SeedManyOptions {
  /** Users to create (each joins one team). */
  users: number
  /** Generations to create (spread over the projects). */
  generations: number
  /** Teams. Default: one per 50 users, at least 1. */
  teams?: number
  /** Projects per team. Default 3. */
  projectsPerTeam?: number
  /** Separates the ids of several `seedMany` calls on one database (0-65535). Default 1; 0 is the sample data's. */
  batch?: number
}

/**
 * What `seedMany` created, as formulas rather than arrays (a million ids
 * need no memory). Indexes are 0-based. User `i` is in team `i % teams` with
 * role `roleOfUser(i)`; project `p` belongs to team `p % teams`; generation
 * `j` is in project `j % projects`.
 */
export interface BulkSeed {
  users: number
  teams: number
  projects: number
  generations: number
  batch: number
  userId: (i: number) => string
  teamId: (t: number) => string
  projectId: (p: number) => string
  generationId: (j: number) => string
  teamOfUser: (i: number) => number
  roleOfUser: (i: number) => Role
  teamOfProject: (p: number) => number
  projectOfGeneration: (j: number) => number
  /** What the authorization rules give user `i` on generation `j`: `[]`, `['read']` or `['read', 'write']`. */
  access: (i: number, j: number) => string[]
}

/** Role of bulk user `i`: mostly members and viewers, some admins, few owners. */
const BULK_ROLES: Role[] = ['member', 'viewer', 'member', 'viewer', 'member', 'admin', 'member', 'viewer', 'member', 'owner']

/**
 * Bulk-creates users, teams, memberships, projects and generations with one
 * `INSERT ... SELECT FROM generate_series` per table (for performance
 * tests: a workload picks users and generations from these, skewed as it
 * likes, and `access(i, j)` tells it the answer to expect).
 */
export async function seedMany (db: Database, options: SeedManyOptions): Promise<BulkSeed> {
  const count = (name: string, value: unknown, min: number, max: number): number => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw new TypeError(`seedMany: ${name} must be an integer from ${min} to ${max}, got ${String(value)}`)
    }
    return value
  }
  const users = count('users', options.users, 1, 50_000_000)
  const generations = count('generations', options.generations, 0, 50_000_000)
  const teams = count('teams', options.teams ?? Math.max(1, Math.ceil(users / 50)), 1, 10_000_000)
  const projectsPerTeam = count('projectsPerTeam', options.projectsPerTeam ?? 3, 1, 1000)
  const batch = count('batch', options.batch ?? 1, 1, 0xffff)
  const projects = teams * projectsPerTeam

  await db.query(
    `INSERT INTO users (id, name, email)
     SELECT ${uuidSql('user', 'i', '$2')}, 'Bulk user ' || i, 'user' || i || '.b' || $2::int || '@bulk.example.com'
     FROM generate_series(0, $1::int - 1) AS i`, [users, batch])
  await db.query(
    `INSERT INTO teams (id, name)
     SELECT ${uuidSql('team', 't', '$2')}, 'Bulk team ' || t FROM generate_series(0, $1::int - 1) AS t`, [teams, batch])
  await db.query(
    `INSERT INTO team_members (team_id, user_id, role)
     SELECT ${uuidSql('team', 'i % $2::int', '$3')}, ${uuidSql('user', 'i', '$3')}, ($4::text[])[1 + i % ${BULK_ROLES.length}]
     FROM generate_series(0, $1::int - 1) AS i`, [users, teams, batch, BULK_ROLES])
  await db.query(
    `INSERT INTO projects (id, team_id, name)
     SELECT ${uuidSql('project', 'p', '$3')}, ${uuidSql('team', 'p % $2::int', '$3')}, 'Bulk project ' || p
     FROM generate_series(0, $1::int - 1) AS p`, [projects, teams, batch])
  if (generations > 0) {
    await db.query(
      `INSERT INTO generations (id, project_id, prompt, status, media_urls)
       SELECT ${uuidSql('generation', 'j', '$3')}, ${uuidSql('project', 'j % $2::int', '$3')}, 'bulk prompt ' || j, 'succeeded',
              ARRAY['${CDN}/bulk/' || $3::int || '/' || j || '.png']
       FROM generate_series(0, $1::int - 1) AS j`, [generations, projects, batch])
  }

  const teamOfUser = (i: number): number => i % teams
  const roleOfUser = (i: number): Role => BULK_ROLES[i % BULK_ROLES.length]
  const teamOfProject = (p: number): number => p % teams
  const projectOfGeneration = (j: number): number => j % projects
  return {
    users,
    teams,
    projects,
    generations,
    batch,
    userId: (i) => exampleUuid('user', i, batch),
    teamId: (t) => exampleUuid('team', t, batch),
    projectId: (p) => exampleUuid('project', p, batch),
    generationId: (j) => exampleUuid('generation', j, batch),
    teamOfUser,
    roleOfUser,
    teamOfProject,
    projectOfGeneration,
    access: (i, j) => {
      if (teamOfUser(i) !== teamOfProject(projectOfGeneration(j))) return []
      return roleOfUser(i) === 'viewer' ? ['read'] : ['read', 'write']
    }
  }
}
