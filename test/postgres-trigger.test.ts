/**
 * The trigger function of lib/postgres-sql.ts on real PostgreSQL (when one
 * answers at DATABASE_URL or the local default) and on PGlite: what each
 * change notifies, that it is delivered at commit only, and that every
 * payload passes the admin route's validation.
 */
import { randomBytes } from 'node:crypto'
import { after, test, type Test } from 'tap'
import pg from 'pg'
import { PGlite } from '@electric-sql/pglite'
import { checkInvalidation } from '../lib/admin.js'
import {
  DEFAULT_TRIGGER_CHANNEL, TRIGGER_FUNCTION_SQL, quoteIdent, quoteLiteral, triggerSql, type TriggerMapping
} from '../lib/postgres-sql.js'
import { findPostgres } from './pg-helpers.js'

const WAIT_MS = 5000
const STEP_MS = 10

/** One test's database session: its own schema (the search_path) and its own channel, both gone at teardown. */
interface Harness {
  readonly schema: string
  readonly channel: string
  /** Runs SQL (one or more statements) on the writer's session. */
  exec (sql: string): Promise<void>
  begin (): Promise<void>
  commit (): Promise<void>
  rollback (): Promise<void>
  /**
   * The payloads (parsed) that arrived since the last drain, once everything
   * committed so far has arrived: a sentinel NOTIFY sent after them on the
   * same channel has come back (notifications arrive in commit order).
   * Each payload must pass the admin route's validation.
   */
  drain (): Promise<unknown[]>
}

interface Backend {
  readonly name: string
  readonly skip: string | false
  open (t: Test, names?: { schema?: string, channel?: string }): Promise<Harness>
}

function suffix (): string {
  return randomBytes(6).toString('hex')
}

async function waitUntil (ready: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`${what} did not arrive within ${WAIT_MS} ms`)
    await new Promise((resolve) => setTimeout(resolve, STEP_MS))
  }
}

/** Takes the received payloads up to a sentinel, checking each like the admin route checks its body. */
function takeUpTo (t: Test, received: string[], sentinel: string | undefined): unknown[] {
  const end = sentinel === undefined ? received.length : received.indexOf(sentinel)
  const taken = received.splice(0, end + (sentinel === undefined ? 0 : 1))
  if (sentinel !== undefined) taken.pop()
  return taken.map((payload) => {
    let body: unknown
    try {
      body = JSON.parse(payload)
    } catch (error) {
      t.fail(`payload is not JSON: ${payload} (${(error as Error).message})`)
      return payload
    }
    const checked = checkInvalidation(body)
    t.notOk(checked instanceof Error, `${payload} is a valid invalidation${checked instanceof Error ? `: ${checked.message}` : ''}`)
    return body
  })
}

const found = await findPostgres()

/** Real PostgreSQL: a writer connection, and a listener connection that also sends the sentinels (so they work while the writer's transaction is open). */
const postgres: Backend = {
  name: 'PostgreSQL',
  skip: 'reason' in found ? found.reason : false,
  async open (t, names = {}) {
    const { url } = found as { url: string }
    const schema = names.schema ?? `authz_trigger_${suffix()}`
    const channel = names.channel ?? `authz_trigger_${suffix()}`
    const writer = new pg.Client({ connectionString: url })
    const listener = new pg.Client({ connectionString: url })
    writer.on('error', () => {})
    listener.on('error', () => {})
    await writer.connect()
    await listener.connect()
    t.teardown(async () => {
      // A failed assertion may leave the writer inside a transaction.
      await writer.query('ROLLBACK').catch(() => {})
      await writer.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`)
      await writer.end()
      await listener.end()
    })
    const received: string[] = []
    listener.on('notification', (message) => {
      if (message.channel === channel) received.push(message.payload ?? '')
    })
    await writer.query(`CREATE SCHEMA ${quoteIdent(schema)}; SET search_path TO ${quoteIdent(schema)}`)
    await listener.query(`LISTEN ${quoteIdent(channel)}`)
    let sentinels = 0
    return {
      schema,
      channel,
      async exec (sql) { await writer.query(sql) },
      async begin () { await writer.query('BEGIN') },
      async commit () { await writer.query('COMMIT') },
      async rollback () { await writer.query('ROLLBACK') },
      async drain () {
        const sentinel = `sentinel ${++sentinels}`
        await listener.query('SELECT pg_notify($1, $2)', [channel, sentinel])
        await waitUntil(() => received.includes(sentinel), `the sentinel on ${channel}`)
        return takeUpTo(t, received, sentinel)
      }
    }
  }
}

let shared: PGlite | undefined
after(async () => { await shared?.close() })

/**
 * PGlite: one in-process session, shared by the tests (each in its own
 * schema and channel). It is the writer and the listener, so while its
 * transaction is open no sentinel can be committed; PGlite hands over
 * notifications as it reads each query's answer, so there a query round
 * trip (and a turn of the event loop for its callbacks) is the barrier.
 */
const pglite: Backend = {
  name: 'PGlite',
  skip: false,
  async open (t, names = {}) {
    shared ??= await PGlite.create()
    const db = shared
    const schema = names.schema ?? `authz_trigger_${suffix()}`
    const channel = names.channel ?? `authz_trigger_${suffix()}`
    const received: string[] = []
    // PGlite runs `LISTEN ${channel}` as given: quoted, the name is taken exactly.
    const unlisten = await db.listen(quoteIdent(channel), (payload) => { received.push(payload) })
    let inTransaction = false
    t.teardown(async () => {
      await unlisten()
      if (inTransaction) await db.exec('ROLLBACK')
      await db.exec(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE; SET search_path TO public`)
    })
    await db.exec(`CREATE SCHEMA ${quoteIdent(schema)}; SET search_path TO ${quoteIdent(schema)}`)
    let sentinels = 0
    return {
      schema,
      channel,
      async exec (sql) { await db.exec(sql) },
      async begin () { await db.exec('BEGIN'); inTransaction = true },
      async commit () { await db.exec('COMMIT'); inTransaction = false },
      async rollback () { await db.exec('ROLLBACK'); inTransaction = false },
      async drain () {
        if (inTransaction) {
          await db.query('SELECT 1')
          await new Promise((resolve) => setImmediate(resolve))
          return takeUpTo(t, received, undefined)
        }
        const sentinel = `sentinel ${++sentinels}`
        await db.query('SELECT pg_notify($1, $2)', [channel, sentinel])
        await waitUntil(() => received.includes(sentinel), `the sentinel on ${channel}`)
        return takeUpTo(t, received, sentinel)
      }
    }
  }
}

const MEMBERS: TriggerMapping = { userId: 'user_id', teamId: 'team_id' }

async function teamMembers (h: Harness): Promise<void> {
  await h.exec(`CREATE TABLE team_members (team_id text, user_id text, role text);
${TRIGGER_FUNCTION_SQL}
${triggerSql('team_members', MEMBERS, { channel: h.channel, schema: h.schema })}`)
}

for (const backend of [postgres, pglite]) {
  test(`${backend.name}: INSERT, UPDATE, DELETE and TRUNCATE notify at commit, a rollback notifies nothing`, { skip: backend.skip }, async (t) => {
    const h = await backend.open(t)
    await teamMembers(h)
    // Re-runnable: installing again replaces the triggers, it does not add a second pair.
    await h.exec(`${TRIGGER_FUNCTION_SQL}\n${triggerSql('team_members', MEMBERS, { channel: h.channel, schema: h.schema })}`)

    await h.exec("INSERT INTO team_members VALUES ('t1', 'u1', 'member')")
    t.same(await h.drain(), [{ userId: 'u1', teamId: 't1' }], 'INSERT: the new row')

    await h.exec("INSERT INTO team_members VALUES ('t1', 'u2', 'viewer'), ('t2', 'u3', 'owner')")
    t.same(await h.drain(), [{ userId: 'u2', teamId: 't1' }, { userId: 'u3', teamId: 't2' }], 'one payload per row, in order')

    await h.exec("UPDATE team_members SET team_id = 't2' WHERE user_id = 'u1'")
    t.same(await h.drain(), [{ userId: 'u1', teamId: 't1' }, { userId: 'u1', teamId: 't2' }], 'UPDATE moving a user: the old row, then the new one')

    await h.exec("UPDATE team_members SET role = 'admin' WHERE user_id = 'u1'")
    t.same(await h.drain(), [{ userId: 'u1', teamId: 't2' }], 'UPDATE of an unmapped column: one payload (old and new map to the same)')

    await h.exec("INSERT INTO team_members VALUES ('t9', 'u9', 'a'), ('t9', 'u9', 'b'), ('t9', 'u9', 'c')")
    t.same(await h.drain(), [{ userId: 'u9', teamId: 't9' }], 'identical payloads of one transaction are folded into one')

    await h.exec("DELETE FROM team_members WHERE user_id = 'u2'")
    t.same(await h.drain(), [{ userId: 'u2', teamId: 't1' }], 'DELETE: the old row')

    await h.exec('TRUNCATE team_members')
    t.same(await h.drain(), [{ all: true }], 'TRUNCATE: everything')

    await h.begin()
    await h.exec("INSERT INTO team_members VALUES ('t3', 'u5', 'member')")
    await h.exec("DELETE FROM team_members WHERE user_id = 'u5'")
    t.same(await h.drain(), [], 'nothing while the transaction is open')
    await h.commit()
    t.same(await h.drain(), [{ userId: 'u5', teamId: 't3' }], 'at COMMIT (the INSERT and DELETE payloads are identical, so folded)')

    await h.begin()
    await h.exec("INSERT INTO team_members VALUES ('t4', 'u6', 'member')")
    await h.exec("UPDATE team_members SET team_id = 't5'")
    await h.exec('TRUNCATE team_members')
    await h.rollback()
    t.same(await h.drain(), [], 'nothing at all after ROLLBACK')

    await h.exec("INSERT INTO team_members VALUES ('t6', 'u7', 'member')")
    t.same(await h.drain(), [{ userId: 'u7', teamId: 't6' }], 'and the next commit notifies again')
  })

  test(`${backend.name}: NULL columns are left out, a row with none sends {"all": true}`, { skip: backend.skip }, async (t) => {
    const h = await backend.open(t)
    await teamMembers(h)
    await h.exec("INSERT INTO team_members VALUES (NULL, 'u1', 'viewer')")
    t.same(await h.drain(), [{ userId: 'u1' }], 'NULL team_id left out')
    await h.exec("INSERT INTO team_members VALUES ('t1', NULL, 'viewer')")
    t.same(await h.drain(), [{ teamId: 't1' }], 'NULL user_id left out')
    await h.exec("INSERT INTO team_members VALUES (NULL, NULL, 'viewer')")
    t.same(await h.drain(), [{ all: true }], 'all mapped columns NULL: everything (fail safe)')
    await h.exec("INSERT INTO team_members VALUES ('', 'u2', 'viewer')")
    t.same(await h.drain(), [{ userId: 'u2' }], 'an empty string is no id (the admin route refuses it)')
    await h.exec("UPDATE team_members SET user_id = NULL WHERE user_id = 'u1'")
    t.same(await h.drain(), [{ userId: 'u1' }, { all: true }], 'UPDATE to NULL: the old row, then everything')

    await h.exec("INSERT INTO team_members VALUES (repeat('x', 1024), 'u3', 'viewer')")
    t.same(await h.drain(), [{ userId: 'u3', teamId: 'x'.repeat(1024) }], 'a 1024-character id is still sent')
    await h.exec("INSERT INTO team_members VALUES (repeat('x', 1025), 'u4', 'viewer')")
    t.same(await h.drain(), [{ all: true }], 'a longer one, which the admin route refuses: everything')

    await h.exec(`CREATE TABLE generations (id uuid, project_id integer, team_id text, owner_id text);
${triggerSql('generations', { generationId: 'id', projectId: 'project_id', teamId: 'team_id', userId: 'owner_id' }, { channel: h.channel })}`)
    const g = 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d'
    await h.exec(`INSERT INTO generations VALUES ('${g}', 42, 't1', 'u1')`)
    t.same(await h.drain(), [{ generationId: g, projectId: '42', teamId: 't1', userId: 'u1' }], 'every field, non-text columns as text')
    await h.exec(`CREATE TABLE wide (a text, b text, c text, d text);
${triggerSql('wide', { userId: 'a', teamId: 'b', projectId: 'c', generationId: 'd' }, { channel: h.channel })}`)
    // 1024 three-byte characters each: two fields make about 6 KB of JSON, three or more go over NOTIFY's 8000 bytes.
    await h.exec(`INSERT INTO wide VALUES (repeat('€', 1024), repeat('€', 1024), NULL, NULL);
INSERT INTO wide VALUES (repeat('€', 1024), repeat('€', 1024), repeat('€', 1024), repeat('€', 1024))`)
    t.same(await h.drain(), [{ userId: '€'.repeat(1024), teamId: '€'.repeat(1024) }, { all: true }],
      'a payload that fits is sent; one of 8000 bytes or more becomes everything instead of failing the write')
  })

  test(`${backend.name}: the function refuses bad trigger arguments, naming them`, { skip: backend.skip }, async (t) => {
    const h = await backend.open(t)
    await h.exec(`CREATE TABLE members (user_id text);\n${TRIGGER_FUNCTION_SQL}`)
    const attach = async (args: string, level = 'AFTER INSERT ON members FOR EACH ROW'): Promise<void> => {
      await h.exec(`DROP TRIGGER IF EXISTS bad ON members; CREATE TRIGGER bad ${level} EXECUTE FUNCTION authz_cache_notify(${args})`)
    }
    const insert = async (): Promise<void> => { await h.exec("INSERT INTO members VALUES ('u1')") }
    await attach(`${quoteLiteral(h.channel)}, 'tenantId', 'user_id'`)
    await t.rejects(insert(), /'tenantId' is not an allowed field \(allowed: userId, generationId, projectId, teamId\)/)
    await attach(`${quoteLiteral(h.channel)}, 'userId'`)
    await t.rejects(insert(), /expected the channel then \(field, column\) pairs, got 2 argument/)
    await attach('')
    await t.rejects(insert(), /got 0 argument/)
    await attach("''")
    await t.rejects(insert(), /the channel \(first argument\) is empty/)
    await attach(`${quoteLiteral(h.channel)}, 'userId', 'user_id', 'userId', 'user_id'`)
    await t.rejects(insert(), /field userId is mapped twice/)
    await attach(`${quoteLiteral(h.channel)}, 'userId', 'usr_id'`)
    await t.rejects(insert(), /no column usr_id \(mapped to userId\)/, 'a typo in a column fails the write instead of flushing the cache on every change')
    await attach(`${quoteLiteral(h.channel)}, 'tenantId', 'user_id'`, 'AFTER TRUNCATE ON members FOR EACH STATEMENT')
    await t.rejects(h.exec('TRUNCATE members'), /'tenantId' is not an allowed field/, 'checked at statement level too')
    t.same(await h.drain(), [], 'no failed write notified anything')
    await attach(quoteLiteral(h.channel))
    await insert()
    t.same(await h.drain(), [{ all: true }], 'the channel alone: every change invalidates everything')
  })

  test(`${backend.name}: quoted names work end to end (a table named we"ird)`, { skip: backend.skip }, async (t) => {
    const h = await backend.open(t, { schema: `sch"ema 'q'_${suffix()}`, channel: `Authz'Weird_${suffix()}` })
    await h.exec(`CREATE TABLE ${quoteIdent('we"ird')} (${quoteIdent("us'er\\id")} text, ${quoteIdent('Team"Id')} text);
${TRIGGER_FUNCTION_SQL}
${triggerSql('we"ird', { userId: "us'er\\id", teamId: 'Team"Id' }, { channel: h.channel, schema: h.schema })}`)
    await h.exec(`INSERT INTO ${quoteIdent(h.schema)}.${quoteIdent('we"ird')} VALUES ('it''s "u1"', 't\\1')`)
    t.same(await h.drain(), [{ userId: 'it\'s "u1"', teamId: 't\\1' }], 'quotes and backslashes in names and values')
    await h.exec(`TRUNCATE ${quoteIdent('we"ird')}`)
    t.same(await h.drain(), [{ all: true }])
  })
}

test('triggerSql: the statements, and TypeErrors naming the argument', async (t) => {
  t.equal(DEFAULT_TRIGGER_CHANNEL, 'authz_invalidate')
  t.equal(triggerSql('team_members', { userId: 'user_id', teamId: 'team_id' }), `DROP TRIGGER IF EXISTS authz_cache_notify_row ON "team_members";
CREATE TRIGGER authz_cache_notify_row
  AFTER INSERT OR UPDATE OR DELETE ON "team_members"
  FOR EACH ROW EXECUTE FUNCTION authz_cache_notify('authz_invalidate', 'userId', 'user_id', 'teamId', 'team_id');
DROP TRIGGER IF EXISTS authz_cache_notify_truncate ON "team_members";
CREATE TRIGGER authz_cache_notify_truncate
  AFTER TRUNCATE ON "team_members"
  FOR EACH STATEMENT EXECUTE FUNCTION authz_cache_notify('authz_invalidate', 'userId', 'user_id', 'teamId', 'team_id');
`)
  t.match(triggerSql('projects', { projectId: 'id' }, { schema: 'app', channel: 'perms' }), /ON "app"\."projects"\n {2}FOR EACH ROW EXECUTE FUNCTION authz_cache_notify\('perms', 'projectId', 'id'\)/)

  const bad: Array<[string, () => unknown, RegExp]> = [
    ['an unknown field', () => triggerSql('t', { tenantId: 'tenant_id' } as TriggerMapping), /^mapping\.tenantId is not an allowed field \(allowed: userId, generationId, projectId, teamId\)/],
    ['an empty mapping', () => triggerSql('t', {}), /^mapping must map at least one of/],
    ['no mapping', () => triggerSql('t', null as unknown as TriggerMapping), /^mapping must be an object/],
    ['an array', () => triggerSql('t', [] as unknown as TriggerMapping), /^mapping must be an object/],
    ['an empty column', () => triggerSql('t', { userId: '' }), /^mapping\.userId must be a non-empty string/],
    ['a column not a string', () => triggerSql('t', { userId: 1 as unknown as string }), /^mapping\.userId must be a non-empty string/],
    ['an empty channel', () => triggerSql('t', MEMBERS, { channel: '' }), /^options\.channel must be a non-empty string/],
    ['a channel of 64 bytes', () => triggerSql('t', MEMBERS, { channel: 'é'.repeat(32) }), /^options\.channel must be at most 63 bytes .*got 64/],
    ['an empty table', () => triggerSql('', MEMBERS), /^table must be a non-empty string/],
    ['a table of 64 bytes', () => triggerSql('t'.repeat(64), MEMBERS), /^table must be at most 63 bytes/],
    ['an empty schema', () => triggerSql('t', MEMBERS, { schema: '' }), /^options\.schema must be a non-empty string/]
  ]
  for (const [what, fn, message] of bad) t.throws(fn, { name: 'TypeError', message }, what)
  t.doesNotThrow(() => triggerSql('t', MEMBERS, { channel: 'c'.repeat(63) }), 'a channel of 63 bytes')
})

test('quoteIdent and quoteLiteral', async (t) => {
  t.equal(quoteIdent('team_members'), '"team_members"')
  t.equal(quoteIdent('we"ird'), '"we""ird"')
  t.equal(quoteIdent('Mixed Case'), '"Mixed Case"')
  t.equal(quoteLiteral("it's"), "'it''s'")
  t.equal(quoteLiteral(''), "''")
  t.equal(quoteLiteral('a\\b\'c'), "E'a\\\\b''c'", 'a backslash: the E form, whatever standard_conforming_strings is')
  t.throws(() => quoteIdent(''), TypeError)
  t.throws(() => quoteIdent('a\0b'), TypeError)
  t.throws(() => quoteLiteral('a\0b'), TypeError)
  t.throws(() => quoteLiteral(1 as unknown as string), TypeError)
})
