// Points the npm xen-api connector (Xen Orchestra's) at a pool member: its login meets
// HOST_IS_SLAVE and goes on at the master the error names, keeping scheme and port.
// Usage: node host-is-slave.mjs MEMBER_URL PASSWORD MASTER_ADDRESS HOSTS
import { createClient } from 'xen-api'

const [url, password, masterAddress, hostCount] = process.argv.slice(2)
const fail = message => {
  console.error(`FAIL: ${message}`)
  process.exit(1)
}
const xapi = createClient({ url, auth: { user: 'root', password }, allowUnauthorized: true, transport: 'xml-rpc' })
const timer = setTimeout(() => fail('timed out'), 30_000)

await xapi.connect()
await xapi.objectsFetched
const hosts = Object.values(xapi.objects.all).filter(o => o.$type === 'host')
const pool = Object.values(xapi.objects.all).find(o => o.$type === 'pool')
const master = hosts.find(h => h.$ref === pool.master)
console.log(`connected through ${url}: hosts=${hosts.length} master address=${master?.address}`)
if (hosts.length !== Number(hostCount)) fail(`expected ${hostCount} hosts, saw ${hosts.length}`)
if (master?.address !== masterAddress) fail(`the pool's master is at ${master?.address}, not ${masterAddress}`)
const name = await xapi.call('pool.get_name_label', pool.$ref)
console.log(`pool name_label read at the master: '${name}'`)

clearTimeout(timer)
await xapi.disconnect()
console.log('OK')
process.exit(0)
