using Xapi.Database;
using Xapi.Model;
using Xapi.Storage.DataPath;
using Xapi.Storage.Service;
using Xapi.Xenops;

namespace Xapi.Server.Api;

/// <summary>
/// The disks a simulated guest reads and writes, through the same storage data path the HTTP and
/// NBD endpoints use, so snapshots, suspend and migration are tested on real bytes. A disk is
/// opened for each burst of guest I/O and closed at its flush: no image stays open across a
/// snapshot or clone that rearranges the VDI's chain (what a real toolstack pauses the VBD for).
/// </summary>
internal sealed class StorageGuestDisks(XapiDatabase database, StorageManager storage) : IGuestDiskProvider
{
    public ValueTask<IGuestDisk> OpenAsync(Guid uuid, VbdConfig vbd, CancellationToken cancellationToken)
    {
        if (vbd.Disk is not { } binding || !database.Snapshot.TryGetByUuid(VDIRef.Class, binding.Id, out var row))
        {
            throw new InvalidOperationException($"VM {uuid}'s device {vbd.Device} has no VDI behind it");
        }
        var vdi = new VDIRef(row.Ref);
        var size = database.Snapshot.Get(vdi).VirtualSize;
        return ValueTask.FromResult<IGuestDisk>(new VdiGuestDisk(database, storage, vdi, size, vbd.Mode == Xapi.Xenops.VbdMode.ReadWrite));
    }

    private sealed class VdiGuestDisk(XapiDatabase database, StorageManager storage, VDIRef vdi, long size, bool writable) : IGuestDisk
    {
        private readonly SemaphoreSlim _gate = new(1, 1);
        private IDiskImage? _open;

        public long Size => size;

        public bool Writable => writable;

        public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
            await UseAsync(image => image.ReadAsync(offset, buffer, cancellationToken), cancellationToken);

        public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
            await UseAsync(image => image.WriteAsync(offset, data, cancellationToken), cancellationToken);

        public async ValueTask FlushAsync(CancellationToken cancellationToken)
        {
            await _gate.WaitAsync(cancellationToken);
            try
            {
                if (_open is { } image)
                {
                    _open = null;
                    await using (image)
                    {
                        await image.FlushAsync(cancellationToken);
                    }
                }
            }
            finally
            {
                _gate.Release();
            }
        }

        private async ValueTask UseAsync(Func<IDiskImage, ValueTask> operation, CancellationToken cancellationToken)
        {
            await _gate.WaitAsync(cancellationToken);
            try
            {
                if (_open is null)
                {
                    var snapshot = database.Snapshot;
                    var record = snapshot.Get(vdi);
                    var context = storage.PluggedContext(snapshot, record.SR);
                    _open = await storage.DriverOf(snapshot.Get(record.SR)).OpenAsync(context, StorageRecords.InfoOf(record), writable, cancellationToken);
                }
                await operation(_open);
            }
            finally
            {
                _gate.Release();
            }
        }

        public async ValueTask DisposeAsync()
        {
            await FlushAsync(CancellationToken.None);
            _gate.Dispose();
        }
    }
}
