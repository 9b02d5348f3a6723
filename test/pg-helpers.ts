import pg from 'pg'

/** PostgreSQL at DATABASE_URL, or the local one CI and this machine run. */
export const DATABASE_URL = process.env.DATABASE_URL !== undefined && process.env.DATABASE_URL !== ''
  ? process.env.DATABASE_URL
  : 'postgres://postgres@127.0.0.1:5432/test'

/** The URL when a PostgreSQL answers there, else why not (a test's `skip` reason). */
export async function findPostgres (): Promise<{ url: string } | { reason: string }> {
  const fromEnv = process.env.DATABASE_URL !== undefined && process.env.DATABASE_URL !== ''
  const client = new pg.Client({ connectionString: DATABASE_URL, connectionTimeoutMillis: 3000 })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.query('SELECT 1')
    await client.end()
    return { url: DATABASE_URL }
  } catch (error) {
    return { reason: `no PostgreSQL answers at ${fromEnv ? 'DATABASE_URL' : DATABASE_URL} (${(error as Error).message}); set DATABASE_URL to run this test` }
  }
}
