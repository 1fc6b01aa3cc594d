using System.Diagnostics;
using Xapi.Storage.DataPath;

namespace Xapi.Storage.Tests.Nbd;

/// <summary>NbdClient and QemuNbdImage against a real qemu-nbd serving a qcow2 chain.</summary>
[TestFixture]
[Parallelizable(ParallelScope.Self)]
public sealed class QemuNbdImageTests
{
    private const int MiB = 1 << 20;
    private const long Size = 64 * MiB;
    private TempDirectory _dir = null!;
    private string _base = "";
    private string _top = "";
    private byte[] _expected = [];

    [SetUp]
    public async Task SetUpAsync()
    {
        _dir = new TempDirectory();
        // The base holds data at [0,1M), [4M,5M) and [63M,64M); the top adds [2M,2.5M).
        var raw = _dir.File("base.raw");
        await using (var file = new FileStream(raw, FileMode.CreateNew))
        {
            file.SetLength(Size);
            foreach (var at in new long[] { 0, 4 * MiB, 63 * MiB })
            {
                file.Position = at;
                file.Write(RandomBytes(MiB, (int)(at / MiB)));
            }
        }
        _base = _dir.File("base.qcow2");
        _top = _dir.File("top.qcow2");
        await Tool.RunAsync("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, _base);
        File.Delete(raw);
        await Tool.RunAsync("qemu-img", "create", "-q", "-f", "qcow2", "-b", _base, "-F", "qcow2", _top);
        await Tool.RunAsync("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 2M 512K", _top);
        _expected = await Tool.RawContentAsync(_top, _dir.Path);
    }

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    private Task<QemuNbdImage> OpenAsync(bool writable, string? image = null) =>
        QemuNbdImage.OpenAsync(new QemuNbdImageOptions { Image = image ?? _top, Format = "qcow2", SocketDirectory = _dir.Path, Writable = writable }, null, CancellationToken.None);

    [TestCase("the page cache is bypassed")]
    [TestCase("on tmpfs (which before Linux 6.6 refused O_DIRECT)")]
    public async Task A_drivers_writable_open_keeps_every_acknowledged_write(string where)
    {
        var onTmpfs = where.StartsWith("on tmpfs", StringComparison.Ordinal);
        if (onTmpfs)
        {
            Assume.That(Directory.Exists("/dev/shm"), "no tmpfs at /dev/shm");
        }
        var directory = Directory.CreateDirectory(onTmpfs ? $"/dev/shm/nbd-{Guid.NewGuid():N}" : _dir.File("direct")).FullName;
        try
        {
            var copy = System.IO.Path.Combine(directory, "copy.qcow2");
            await Tool.RunAsync("qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", _top, copy);
            var data = RandomBytes(3 * MiB / 2, 99);
            await using (var image = await QemuNbdImage.OpenAsync(copy, "qcow2", writable: true, directory, CancellationToken.None))
            {
                // Not sector-aligned: O_DIRECT alignment is qemu's business, not the caller's.
                await image.WriteAsync((10 * MiB) + 512 + 3, data, CancellationToken.None);
                await image.FlushAsync(CancellationToken.None);
            }
            data.CopyTo(_expected, (10 * MiB) + 512 + 3);
            Assert.That(await Tool.RawContentAsync(copy, directory), Is.EqualTo(_expected));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Test]
    public async Task Reading_a_qcow2_chain_through_qemu_nbd_gives_the_bytes_qemu_img_converts()
    {
        await using var image = await OpenAsync(writable: false);
        var read = new byte[Size];
        await image.ReadAsync(0, read, CancellationToken.None);

        Assert.That(image.Size, Is.EqualTo(Size));
        Assert.That(image.Writable, Is.False);
        Assert.That(Tool.Sha256(read), Is.EqualTo(Tool.Sha256(_expected)));
    }

    [Test]
    public async Task Concurrent_reads_each_get_their_own_bytes()
    {
        await using var image = await OpenAsync(writable: false);
        var random = new Random(7);
        var ranges = Enumerable.Range(0, 48).Select(_ => (Offset: (long)random.Next(0, (int)Size - (3 * MiB)), Length: random.Next(1, 3 * MiB))).ToList();

        var reads = ranges.Select(async range =>
        {
            var buffer = new byte[range.Length];
            await image.ReadAsync(range.Offset, buffer, CancellationToken.None);
            return buffer;
        }).ToList();
        var results = await Task.WhenAll(reads);

        for (var i = 0; i < ranges.Count; i++)
        {
            Assert.That(results[i].AsSpan().SequenceEqual(_expected.AsSpan((int)ranges[i].Offset, ranges[i].Length)), $"read {ranges[i]}");
        }
    }

    [Test]
    public async Task Block_status_maps_what_no_layer_of_the_chain_holds_as_zero()
    {
        await using var image = await OpenAsync(writable: false);
        var extents = new List<DiskExtent>();
        await foreach (var extent in image.MapAsync(0, Size, CancellationToken.None))
        {
            extents.Add(extent);
        }

        Assert.That(extents, Is.EqualTo(new[]
        {
            new DiskExtent(0, MiB, Zero: false),
            new DiskExtent(MiB, MiB, Zero: true),
            new DiskExtent(2 * MiB, MiB / 2, Zero: false),
            new DiskExtent(5 * MiB / 2, 3 * MiB / 2, Zero: true),
            new DiskExtent(4 * MiB, MiB, Zero: false),
            new DiskExtent(5 * MiB, 58 * MiB, Zero: true),
            new DiskExtent(63 * MiB, MiB, Zero: false),
        }));
    }

    [Test]
    public async Task A_map_of_a_middle_range_starts_and_ends_exactly_at_the_range()
    {
        await using var image = await OpenAsync(writable: false);
        var extents = new List<DiskExtent>();
        await foreach (var extent in image.MapAsync(MiB / 2, 4 * MiB, CancellationToken.None))
        {
            extents.Add(extent);
        }

        Assert.That(extents, Is.EqualTo(new[]
        {
            new DiskExtent(MiB / 2, MiB / 2, Zero: false),
            new DiskExtent(MiB, MiB, Zero: true),
            new DiskExtent(2 * MiB, MiB / 2, Zero: false),
            new DiskExtent(5 * MiB / 2, 3 * MiB / 2, Zero: true),
            new DiskExtent(4 * MiB, MiB / 2, Zero: false),
        }));
    }

    [Test]
    public async Task Writes_zeroes_and_a_flush_land_in_the_top_image_and_leave_the_base_alone()
    {
        var baseBefore = Tool.Sha256(_base);
        var large = RandomBytes(36 * MiB, 99);
        var small = RandomBytes(3 * MiB + 12345, 98);
        await using (var image = await OpenAsync(writable: true))
        {
            Assert.That(image.Writable, Is.True);
            // Over the 32 MiB maximum payload, so the client must split it.
            await image.WriteAsync(20 * MiB, large, CancellationToken.None);
            await image.WriteAsync(7 * MiB + 512, small, CancellationToken.None);
            await image.WriteZeroesAsync(4 * MiB, MiB, CancellationToken.None);
            await image.FlushAsync(CancellationToken.None);

            var zeroed = new List<DiskExtent>();
            await foreach (var extent in image.MapAsync(4 * MiB, MiB, CancellationToken.None))
            {
                zeroed.Add(extent);
            }
            Assert.That(zeroed, Is.EqualTo(new[] { new DiskExtent(4 * MiB, MiB, Zero: true) }));
        }

        large.CopyTo(_expected, 20 * MiB);
        small.CopyTo(_expected, 7 * MiB + 512);
        Array.Clear(_expected, 4 * MiB, MiB);
        var after = await Tool.RawContentAsync(_top, _dir.Path);
        Assert.That(Tool.Sha256(after), Is.EqualTo(Tool.Sha256(_expected)));
        Assert.That(Tool.Sha256(_base), Is.EqualTo(baseBefore));
    }

    [Test]
    public async Task Qemu_nbd_reuses_its_buffers_instead_of_faulting_in_fresh_memory_for_every_read()
    {
        // Budget: reading 256 MiB in 4 MiB requests costs qemu-nbd fewer minor page faults than a
        // quarter of the pages read. glibc's default hands each request buffer over the mmap
        // threshold fresh pages from mmap (one fault per 4 KiB page, 65,536 here), and on a
        // virtual machine those faults, not the copying, bounded every transfer through qemu-nbd.
        const int Reads = 64;
        const int Chunk = 4 * MiB;
        var full = _dir.File("full.qcow2");
        await Tool.RunAsync("qemu-img", "create", "-q", "-f", "qcow2", full, "64M");
        await Tool.RunAsync("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 64M", full);
        await using var image = await OpenAsync(writable: false, full);
        var buffer = new byte[Chunk];
        await image.ReadAsync(0, buffer, CancellationToken.None);
        var before = MinorFaults(image.ProcessId);
        for (var i = 0; i < Reads; i++)
        {
            await image.ReadAsync(i % (Size / Chunk) * Chunk, buffer, CancellationToken.None);
        }
        var faults = MinorFaults(image.ProcessId) - before;

        Assert.That(faults, Is.LessThan(Reads * Chunk / 4096 / 4), $"{faults} minor faults in qemu-nbd for {Reads} reads of {Chunk} bytes");
    }

    /// <summary>The process's minor page faults so far (field 10 of /proc/&lt;pid&gt;/stat).</summary>
    private static long MinorFaults(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        // The command name (field 2) is in parentheses and may hold spaces; count from after it.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[7], System.Globalization.CultureInfo.InvariantCulture);
    }

    [Test]
    public async Task A_read_only_image_refuses_writes()
    {
        await using var image = await OpenAsync(writable: false);

        await Assert.ThrowsAsync<InvalidOperationException>(async () => await image.WriteAsync(0, new byte[512], CancellationToken.None));
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await image.WriteZeroesAsync(0, 512, CancellationToken.None));
    }

    [Test]
    public async Task Disposing_the_image_leaves_no_qemu_nbd_process_and_no_socket()
    {
        var image = await OpenAsync(writable: true);
        var pid = image.ProcessId;
        Assert.That(Directory.GetFiles(_dir.Path, "*.sock"), Has.Length.EqualTo(1));

        await image.DisposeAsync();

        Assert.That(ProcessAlive(pid), Is.False, "qemu-nbd is still running");
        Assert.That(Directory.GetFiles(_dir.Path, "*.sock"), Is.Empty);
    }

    [Test]
    public async Task Opening_a_missing_image_fails_with_what_qemu_nbd_said()
    {
        var missing = _dir.File("missing.qcow2");

        var error = await Assert.ThrowsAsync<IOException>(async () => await OpenAsync(writable: false, missing));

        Assert.That(error!.Message, Does.Contain("missing.qcow2").And.Contain("exited"));
        Assert.That(Directory.GetFiles(_dir.Path, "*.sock"), Is.Empty);
    }

    [Test]
    public async Task An_image_opened_from_a_thread_that_has_since_ended_stays_readable()
    {
        // PR_SET_PDEATHSIG follows the forking thread: a qemu-nbd forked by a thread that ends
        // would be killed with it.
        QemuNbdImage? image = null;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                image = OpenAsync(writable: false).GetAwaiter().GetResult();
            }
            catch (Exception ex)
            {
                failure = ex;
            }
        });
        thread.Start();
        thread.Join();
        Assert.That(failure, Is.Null);
        await using var opened = image!;
        // The ended thread's death signal, if any, is delivered at its exit, before Join returns.
        var read = new byte[MiB];
        await opened.ReadAsync(63 * MiB, read, CancellationToken.None);

        Assert.That(read.AsSpan().SequenceEqual(_expected.AsSpan(63 * MiB, MiB)));
        Assert.That(ProcessAlive(opened.ProcessId), Is.True);
    }

    [Test]
    public async Task Qemu_nbd_dies_when_the_process_that_started_it_is_killed()
    {
        var options = new QemuNbdImageOptions { Image = _top, Format = "qcow2", SocketDirectory = _dir.Path };
        var socket = _dir.File("orphan.sock");
        using var watcher = new FileSystemWatcher(_dir.Path, "orphan.sock");
        var listening = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        watcher.Created += (_, _) => listening.TrySetResult();
        watcher.EnableRaisingEvents = true;
        // A stand-in parent started with exactly the command line QemuNbdImage uses.
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in (string[])["-c", "setpriv \"$@\" & echo $!; wait", "bash", .. QemuNbdImage.Arguments(options, socket)])
        {
            start.ArgumentList.Add(argument);
        }
        using var parent = Process.Start(start)!;
        var pid = int.Parse(await parent.StandardOutput.ReadLineAsync() ?? "0", System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            if (File.Exists(socket))
            {
                listening.TrySetResult();
            }
            await listening.Task.WaitAsync(TimeSpan.FromSeconds(20));

            parent.Kill();
            await parent.WaitForExitAsync();
            // qemu-nbd holds the stdout pipe it inherited until it exits: end of file means it
            // is gone (/proc may still show it for a moment while the kernel finishes the exit).
            var rest = parent.StandardOutput.ReadToEndAsync();
            Assert.That(await Task.WhenAny(rest, Task.Delay(TimeSpan.FromSeconds(10))), Is.SameAs(rest), "qemu-nbd outlived its parent");
        }
        finally
        {
            if (ProcessAlive(pid))
            {
                Process.GetProcessById(pid).Kill();
            }
        }
    }

    /// <summary>Running, as opposed to gone or a zombie nobody reaped.</summary>
    private static bool ProcessAlive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..][0] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }
}
