// Xen Orchestra's way of making and running a VM (xo-server's createVm and startVm): clone a
// template, provision its disks, add a network, Async.VM.start followed through task events,
// the guest's metrics arriving in the object cache, then a clean shutdown.
// Usage: node vm-lifecycle.mjs URL PASSWORD
import { createClient } from 'xen-api'

const [url, password] = process.argv.slice(2)
const fail = message => {
  console.error(`FAIL: ${message}`)
  process.exit(1)
}
const timer = setTimeout(() => fail('timed out'), 45_000)
const xapi = createClient({ url, auth: { user: 'root', password }, allowUnauthorized: true })
await xapi.connect()
await xapi.objectsFetched

// Resolves with the first cached object for which `predicate` holds, or rejects after `ms`.
const cached = (what, predicate, ms = 10_000) =>
  new Promise((resolve, reject) => {
    const check = () => {
      const found = Object.values(xapi.objects.all).find(predicate)
      if (found !== undefined) {
        xapi.objects.removeListener('add', check)
        xapi.objects.removeListener('update', check)
        clearTimeout(deadline)
        resolve(found)
      }
    }
    const deadline = setTimeout(() => reject(new Error(`${what} not in the cache within ${ms} ms`)), ms)
    xapi.objects.on('add', check)
    xapi.objects.on('update', check)
    check()
  })

const template = Object.values(xapi.objects.all).find(o => o.$type === 'VM' && o.is_a_template && o.other_config.disks)
if (template === undefined) fail('no template with disks to install')
const label = `xo-vm-${Date.now()}`
const vmRef = await xapi.callAsync('VM.clone', template.$ref, label)
// XO lowers the memory to what the user asked before provisioning.
const memory = 256 * 1024 * 1024
await xapi.call('VM.set_memory_limits', vmRef, memory, memory, memory, memory)
// XO makes the disks itself: it drops the template's disks spec, provisions (which turns the
// clone into a VM), then adds its own.
await xapi.call('VM.remove_from_other_config', vmRef, 'disks')
await xapi.callAsync('VM.provision', vmRef)
const pool = Object.values(xapi.objects.all).find(o => o.$type === 'pool')
const vdiRef = await xapi.callAsync('VDI.create', {
  name_label: `${label} disk`, name_description: '', SR: pool.default_SR, virtual_size: 16 * 1024 * 1024,
  type: 'user', sharable: false, read_only: false, other_config: {}, xenstore_data: {}, sm_config: {}, tags: [],
})
await xapi.call('VBD.create', {
  VM: vmRef, VDI: vdiRef, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false,
  other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {},
})
const vm = await cached('the new VM', o => o.$ref === vmRef && !o.is_a_template && o.VBDs.length > 0)
const disks = vm.VBDs.map(ref => xapi.getObjectByRef(ref)).filter(vbd => vbd.type === 'Disk')
if (disks.length !== 1) fail(`the VM has ${disks.length} disks`)
console.log(`provisioned ${label}: disk ${disks[0].VDI}`)

const network = Object.values(xapi.objects.all).find(o => o.$type === 'network')
await xapi.call('VIF.create', {
  device: '0', network: network.$ref, VM: vmRef, MAC: '', MTU: 1500, other_config: {},
  qos_algorithm_type: '', qos_algorithm_params: {}, locking_mode: 'network_default', ipv4_allowed: [], ipv6_allowed: [],
})

// callAsync resolves when the task's event says it succeeded.
const started = Date.now()
await xapi.callAsync('VM.start', vmRef, false, false)
const running = await cached('the running VM', o => o.$ref === vmRef && o.power_state === 'Running')
console.log(`started through a task in ${Date.now() - started} ms, domid ${running.domid}`)

const metrics = await cached('guest metrics', o => o.$type === 'VM_guest_metrics' && o.$ref === xapi.objects.all[vm.$id]?.guest_metrics)
if (!metrics.PV_drivers_detected || !metrics.os_version.distro) fail(`guest metrics ${JSON.stringify(metrics.os_version)}`)
if (!Object.keys(metrics.networks).includes('0/ip')) fail(`guest networks ${JSON.stringify(metrics.networks)}`)
console.log(`guest metrics in the cache: ${metrics.os_version.distro} ${metrics.networks['0/ip']}`)

await xapi.callAsync('VM.clean_shutdown', vmRef)
await cached('the halted VM', o => o.$ref === vmRef && o.power_state === 'Halted')
console.log('halted')

clearTimeout(timer)
await xapi.disconnect()
console.log('OK')
process.exit(0)
