// Xen Orchestra's view of the pool: the xen-api object cache must follow changes made by
// another client (add, mod, del) within a second, and callAsync must settle through tasks.
// Usage: node events.mjs URL PASSWORD
import { createClient } from 'xen-api'

const [url, password] = process.argv.slice(2)
const fail = message => {
  console.error(`FAIL: ${message}`)
  process.exit(1)
}
const timer = setTimeout(() => fail('timed out'), 45_000)
const connect = async () => {
  const xapi = createClient({ url, auth: { user: 'root', password }, allowUnauthorized: true })
  await xapi.connect()
  return xapi
}

const watcher = await connect()
await watcher.objectsFetched
const other = await connect()

// Resolves when the watcher's cache shows `predicate` true, or rejects after a second.
const seen = (what, predicate) =>
  new Promise((resolve, reject) => {
    const started = Date.now()
    const check = () => {
      const found = Object.values(watcher.objects.all).find(predicate)
      if (found !== undefined) {
        watcher.objects.removeListener('add', check)
        watcher.objects.removeListener('update', check)
        watcher.objects.removeListener('remove', check)
        clearTimeout(deadline)
        console.log(`${what} seen after ${Date.now() - started} ms`)
        resolve(found)
      }
    }
    const deadline = setTimeout(() => reject(new Error(`${what} not seen within a second`)), 1000)
    watcher.objects.on('add', check)
    watcher.objects.on('update', check)
    watcher.objects.on('remove', check)
    check()
  })

const template = Object.values(watcher.objects.all).find(o => o.$type === 'VM' && o.is_a_template)
const label = `events-test-${Date.now()}`
const record = {
  name_label: label,
  name_description: '',
  user_version: 1,
  is_a_template: false,
  affinity: 'OpaqueRef:NULL',
  memory_target: template.memory_static_max,
  memory_static_max: template.memory_static_max,
  memory_dynamic_max: template.memory_static_max,
  memory_dynamic_min: template.memory_static_max,
  memory_static_min: template.memory_static_min,
  VCPUs_params: {},
  VCPUs_max: 1,
  VCPUs_at_startup: 1,
  actions_after_shutdown: 'destroy',
  actions_after_reboot: 'restart',
  actions_after_crash: 'restart',
  PV_bootloader: '',
  PV_kernel: '',
  PV_ramdisk: '',
  PV_args: '',
  PV_bootloader_args: '',
  PV_legacy_args: '',
  HVM_boot_policy: 'BIOS order',
  HVM_boot_params: {},
  platform: {},
  PCI_bus: '',
  other_config: {},
  recommendations: '',
}

const created = other.call('VM.create', record)
const vm = await seen('add', o => o.$type === 'VM' && o.name_label === label)
if (vm.$ref !== (await created)) fail('the cached VM is not the one created')

await other.call('VM.set_name_label', vm.$ref, label + '-renamed')
await seen('mod', o => o.$ref === vm.$ref && o.name_label === label + '-renamed')

await other.call('VM.destroy', vm.$ref)
const removed = new Promise((resolve, reject) => {
  const deadline = setTimeout(() => reject(new Error('del not seen within a second')), 1000)
  const started = Date.now()
  watcher.objects.on('remove', objects => {
    if (vm.$id in objects || Object.values(objects).some(o => o?.$ref === vm.$ref) || watcher.objects.all[vm.$id] === undefined) {
      clearTimeout(deadline)
      console.log(`del seen after ${Date.now() - started} ms`)
      resolve()
    }
  })
})
await removed

// callAsync: Async.VM.create returns a task; the result arrives through task events.
const asyncRef = await other.callAsync('VM.create', { ...record, name_label: label + '-async' })
if (typeof asyncRef !== 'string' || !asyncRef.startsWith('OpaqueRef:')) fail(`callAsync resolved with ${asyncRef}`)
const label2 = await other.call('VM.get_name_label', asyncRef)
if (label2 !== label + '-async') fail(`async-created VM is named ${label2}`)
console.log(`callAsync resolved with ${asyncRef}`)

try {
  await other.callAsync('VM.destroy', 'OpaqueRef:no-such-vm')
  fail('a failing async call resolved')
} catch (error) {
  if (error.code !== 'HANDLE_INVALID') fail(`failing async call rejected with ${error.code ?? error}`)
  console.log(`failing callAsync rejected with ${error.code} ${JSON.stringify(error.params)}`)
}

clearTimeout(timer)
await Promise.all([watcher.disconnect(), other.disconnect()])
console.log('OK')
process.exit(0)
