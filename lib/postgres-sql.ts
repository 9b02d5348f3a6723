/**
 * The SQL users attach to their permission tables so that the database
 * itself tells every instance what to invalidate (SPEC section 9; the
 * listener is ./postgres.ts).
 *
 * `authz_cache_notify()` is an AFTER trigger function. For each changed row
 * (the old row of an UPDATE or DELETE, the new row of an INSERT or UPDATE)
 * it sends `pg_notify(channel, payload)`, where the payload is the JSON of
 * the admin route's invalidation body built from the row's columns:
 * `{"teamId": "t1", "userId": "u1"}`. A mapped column that is NULL (or
 * empty) is left out; when none is left the payload is `{"all": true}`
 * (fail safe), and so it is for a statement-level trigger (TRUNCATE), which
 * has no rows.
 *
 * Why a trigger and NOTIFY:
 * - NOTIFY is delivered when the transaction commits, never before: the
 *   invalidation cannot race ahead of the commit (an instance reloading at
 *   once reads the new rows), and a transaction that rolls back sends
 *   nothing.
 * - PostgreSQL folds identical notifications (same channel and payload)
 *   within one transaction into one, so a bulk change of many rows of one
 *   user costs one invalidation; the function also skips an UPDATE's new
 *   row when it maps to the same payload as the old one.
 * - A NOTIFY payload must be shorter than 8000 bytes. Ids are short; a value
 *   longer than the admin route accepts (1024 characters), or a payload that
 *   would not fit, sends `{"all": true}` instead of failing the write.
 *
 * Arguments of the trigger: the channel, then (field, column) pairs, the
 * fields among userId, generationId, projectId, teamId. The function checks
 * them on every call and raises (failing the write, naming the culprit) on
 * an unknown or repeated field, an even argument count, or a column the
 * table does not have: a typo must not silently flush the whole cache, nor
 * silently invalidate nothing.
 *
 * Mappings for the example's tables:
 *   team_members -> { userId: 'user_id', teamId: 'team_id' }
 *   projects     -> { projectId: 'id', teamId: 'team_id' }
 *   generations  -> { generationId: 'id', projectId: 'project_id' }
 *
 * Requires PostgreSQL 11 or later (`EXECUTE FUNCTION`). The channel is
 * case-sensitive in `pg_notify`: LISTEN on the same name, quoted (the
 * plugin does), or keep it lower case.
 */

/** The invalidation fields a trigger may fill from a row. */
export const TRIGGER_FIELDS = ['userId', 'generationId', 'projectId', 'teamId'] as const
export type TriggerField = typeof TRIGGER_FIELDS[number]

/** Which column of the table holds each field, e.g. `{ userId: 'user_id', teamId: 'team_id' }`. */
export type TriggerMapping = Partial<Record<TriggerField, string>>

/** The channel the triggers notify on, the plugin's default `postgres.channel`. */
export const DEFAULT_TRIGGER_CHANNEL = 'authz_invalidate'

/** PostgreSQL names (channels, tables, columns) are at most 63 bytes (NAMEDATALEN - 1); longer ones are truncated or refused. */
export const MAX_IDENTIFIER_BYTES = 63

/** A field value longer than this is refused by the admin route's validation (lib/admin.ts), so the trigger sends `{"all": true}` instead. */
const MAX_VALUE_LENGTH = 1024

/** PostgreSQL refuses a NOTIFY payload of this many bytes or more. */
const NOTIFY_PAYLOAD_LIMIT = 8000

const FIELD_LIST = TRIGGER_FIELDS.map((f) => `'${f}'`).join(', ')

/**
 * `CREATE OR REPLACE FUNCTION authz_cache_notify()`: run once per database
 * (or schema: it is created in the first schema of the `search_path`, and
 * `CREATE TRIGGER` finds it there). Re-runnable.
 */
export const TRIGGER_FUNCTION_SQL = `CREATE OR REPLACE FUNCTION authz_cache_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_channel text := TG_ARGV[0];
  v_fields text[] := '{}';
  v_rows jsonb[] := '{}';
  v_row jsonb;
  v_payload jsonb;
  v_body text;
  v_previous text;
  v_value text;
  v_too_long boolean;
  i integer;
BEGIN
  IF TG_NARGS < 1 OR TG_NARGS % 2 = 0 THEN
    RAISE EXCEPTION 'authz_cache_notify on %: expected the channel then (field, column) pairs, got % argument(s)',
      format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), TG_NARGS
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF v_channel = '' THEN
    RAISE EXCEPTION 'authz_cache_notify on %: the channel (first argument) is empty',
      format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME)
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  FOR i IN 1 .. TG_NARGS - 1 BY 2 LOOP
    IF TG_ARGV[i] NOT IN (${FIELD_LIST}) THEN
      RAISE EXCEPTION 'authz_cache_notify on %: % is not an allowed field (allowed: userId, generationId, projectId, teamId)',
        format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), quote_literal(TG_ARGV[i])
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF TG_ARGV[i] = ANY (v_fields) THEN
      RAISE EXCEPTION 'authz_cache_notify on %: field % is mapped twice',
        format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), TG_ARGV[i]
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_fields := array_append(v_fields, TG_ARGV[i]);
  END LOOP;

  -- TRUNCATE (or any statement-level use) has no rows to read: invalidate everything.
  IF TG_LEVEL = 'STATEMENT' THEN
    PERFORM pg_notify(v_channel, '{"all": true}');
    RETURN NULL;
  END IF;

  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    v_rows := array_append(v_rows, to_jsonb(OLD));
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    v_rows := array_append(v_rows, to_jsonb(NEW));
  END IF;

  FOREACH v_row IN ARRAY v_rows LOOP
    v_payload := '{}';
    v_too_long := false;
    FOR i IN 1 .. TG_NARGS - 1 BY 2 LOOP
      IF NOT v_row ? TG_ARGV[i + 1] THEN
        RAISE EXCEPTION 'authz_cache_notify on %: no column % (mapped to %)',
          format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), quote_ident(TG_ARGV[i + 1]), TG_ARGV[i]
          USING ERRCODE = 'undefined_column';
      END IF;
      -- An empty string is no id: the admin route would refuse it.
      v_value := NULLIF(v_row ->> TG_ARGV[i + 1], '');
      IF v_value IS NOT NULL THEN
        IF char_length(v_value) > ${MAX_VALUE_LENGTH} THEN
          v_too_long := true;
        END IF;
        v_payload := v_payload || jsonb_build_object(TG_ARGV[i], v_value);
      END IF;
    END LOOP;
    IF v_payload = '{}' OR v_too_long THEN
      v_body := '{"all": true}';
    ELSE
      v_body := v_payload::text;
      IF octet_length(v_body) >= ${NOTIFY_PAYLOAD_LIMIT} THEN
        v_body := '{"all": true}';
      END IF;
    END IF;
    IF v_body IS DISTINCT FROM v_previous THEN
      PERFORM pg_notify(v_channel, v_body);
      v_previous := v_body;
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;
`

/** Options of `triggerSql`. */
export interface TriggerSqlOptions {
  /**
   * Channel to notify on; the plugin's `postgres.channel` must match.
   * Case-sensitive, at most 63 bytes.
   * @default 'authz_invalidate'
   */
  channel?: string
  /** Schema of the table; absent: the table is found through the `search_path`. */
  schema?: string
  /**
   * The columns whose UPDATE changes a permission (`UPDATE OF ...`): an
   * update that touches none of them (a generation's prompt) notifies
   * nothing. Absent: every UPDATE notifies. INSERT, DELETE and TRUNCATE
   * always do.
   */
  columns?: string[]
}

/**
 * A PostgreSQL identifier, always double-quoted (inner `"` doubled), so it is
 * taken exactly as written: case-sensitive, any character.
 * Throws a TypeError for an empty name or one holding a NUL character.
 */
export function quoteIdent (name: string): string {
  if (typeof name !== 'string' || name === '') throw new TypeError('quoteIdent: an identifier must be a non-empty string')
  if (name.includes('\0')) throw new TypeError('quoteIdent: an identifier cannot hold a NUL character')
  return `"${name.replace(/"/g, '""')}"`
}

/**
 * A PostgreSQL string literal: single quotes doubled; with a backslash, the
 * `E'...'` form with backslashes doubled, so it reads the same whatever
 * `standard_conforming_strings` is (as PostgreSQL's own `quote_literal`).
 * Throws a TypeError for a string holding a NUL character.
 */
export function quoteLiteral (value: string): string {
  if (typeof value !== 'string') throw new TypeError('quoteLiteral: the value must be a string')
  if (value.includes('\0')) throw new TypeError('quoteLiteral: a PostgreSQL string cannot hold a NUL character')
  const quoted = value.replace(/'/g, "''")
  return value.includes('\\') ? `E'${quoted.replace(/\\/g, '\\\\')}'` : `'${quoted}'`
}

function checkName (argument: string, value: unknown): string {
  if (typeof value !== 'string' || value === '') throw new TypeError(`${argument} must be a non-empty string`)
  if (Buffer.byteLength(value) > MAX_IDENTIFIER_BYTES) throw new TypeError(`${argument} must be at most ${MAX_IDENTIFIER_BYTES} bytes (PostgreSQL's name length), got ${Buffer.byteLength(value)}`)
  return value
}

/**
 * The statements that attach `authz_cache_notify` to a table: a row-level
 * `AFTER INSERT OR UPDATE OR DELETE` trigger (`authz_cache_notify_row`) and a
 * statement-level `AFTER TRUNCATE` one (`authz_cache_notify_truncate`), each
 * dropped first so the SQL can be run again (with a new mapping, say).
 * Trigger names belong to their table, so every table uses the same two.
 * Run `TRIGGER_FUNCTION_SQL` before.
 *
 * Throws a TypeError naming the argument for a mapping field other than
 * userId, generationId, projectId, teamId, an empty mapping or column, and
 * a table, schema or channel that is empty or longer than 63 bytes.
 */
export function triggerSql (table: string, mapping: TriggerMapping, options: TriggerSqlOptions = {}): string {
  checkName('table', table)
  if (options.schema !== undefined) checkName('options.schema', options.schema)
  const channel = checkName('options.channel', options.channel ?? DEFAULT_TRIGGER_CHANNEL)
  if (typeof mapping !== 'object' || mapping === null || Array.isArray(mapping)) {
    throw new TypeError(`mapping must be an object of field to column, e.g. { userId: 'user_id' } (fields: ${TRIGGER_FIELDS.join(', ')})`)
  }
  const pairs = Object.entries(mapping)
  if (pairs.length === 0) throw new TypeError(`mapping must map at least one of ${TRIGGER_FIELDS.join(', ')} to a column`)
  const args = [quoteLiteral(channel)]
  for (const [field, column] of pairs) {
    if (!(TRIGGER_FIELDS as readonly string[]).includes(field)) {
      throw new TypeError(`mapping.${field} is not an allowed field (allowed: ${TRIGGER_FIELDS.join(', ')})`)
    }
    args.push(quoteLiteral(field), quoteLiteral(checkName(`mapping.${field}`, column)))
  }
  let update = 'UPDATE'
  if (options.columns !== undefined) {
    if (!Array.isArray(options.columns) || options.columns.length === 0) throw new TypeError('options.columns must be a non-empty array of column names')
    // The mapped columns always count: an UPDATE that moves a row to another user or team must notify.
    const columns = options.columns.map((column, i) => checkName(`options.columns[${i}]`, column))
    for (const [, column] of pairs) if (!columns.includes(column)) columns.push(column)
    update = `UPDATE OF ${columns.map(quoteIdent).join(', ')}`
  }
  const target = options.schema === undefined ? quoteIdent(table) : `${quoteIdent(options.schema)}.${quoteIdent(table)}`
  const call = `authz_cache_notify(${args.join(', ')})`
  return `DROP TRIGGER IF EXISTS authz_cache_notify_row ON ${target};
CREATE TRIGGER authz_cache_notify_row
  AFTER INSERT OR ${update} OR DELETE ON ${target}
  FOR EACH ROW EXECUTE FUNCTION ${call};
DROP TRIGGER IF EXISTS authz_cache_notify_truncate ON ${target};
CREATE TRIGGER authz_cache_notify_truncate
  AFTER TRUNCATE ON ${target}
  FOR EACH STATEMENT EXECUTE FUNCTION ${call};
`
}
