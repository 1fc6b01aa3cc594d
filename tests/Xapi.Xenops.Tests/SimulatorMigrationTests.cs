using Xapi.Xenops.Simulator;
using static Xapi.Xenops.Tests.Sim;

namespace Xapi.Xenops.Tests;

/// <summary>
/// The simulator's live migration: pre-copy rounds send again what the guest wrote meanwhile, the
/// guest is paused only for the last round, and the receiver ends with the sender's memory, byte
/// for byte, or refuses the stream.
/// </summary>
public class SimulatorMigrationTests
{
    // 10 MiB/s of writes within a 16 MiB working set, over a link of 100 MiB/s.
    private const double DirtyPagesPerSecond = 2560;
    private static readonly TimeSpan LinkTimePerMiB = TimeSpan.FromMilliseconds(10);

    private static SimulatorOptions Options() => new()
    {
        DirtyPagesPerSecond = DirtyPagesPerSecond,
        DirtyWorkingSetBytes = 16 * MiB,
        GuestAgentDelay = TimeSpan.Zero,
    };

    [Test]
    public async Task Precopy_sends_again_what_the_guest_wrote_and_the_receiver_ends_with_the_same_memory()
    {
        var clock = new ManualClock();
        using var source = new SimulatorBackend(Options(), clock);
        using var destination = new SimulatorBackend(Options(), new ManualClock());
        var config = Vm(1, dynamicMin: 256 * MiB, dynamicMax: 256 * MiB);
        await StartAsync(source, config);
        clock.Advance(TimeSpan.FromSeconds(7));
        using var wire = new MemoryStream();

        var report = await source.MigrateSendAsync(config.Uuid, new LinkStream(wire, clock), progress: null);

        var paused = await source.TryGetDomainAsync(config.Uuid);
        await destination.CreateAsync(config);
        wire.Position = 0;
        var received = await destination.MigrateReceiveAsync(config.Uuid, wire);
        var running = await destination.UnpauseAsync(config.Uuid);
        var pages = (int)(256 * MiB / 4096);
        Assert.Multiple(() =>
        {
            Assert.That(report.PagesPerRound[0], Is.EqualTo(pages), "the first round is all of memory");
            // 256 MiB at 100 MiB/s is 2.56 s, in which the guest writes about 6,500 pages of its 4,096-page working set.
            Assert.That(report.PagesPerRound[1], Is.InRange(3000, 4096), "the second round is what the guest wrote during the first");
            Assert.That(report.PagesPerRound.Zip(report.PagesPerRound.Skip(1)), Is.All.Matches<(long Before, long After)>(r => r.After < r.Before / 5),
                "each round sends a fraction of the one before");
            Assert.That(report.PagesPerRound[^1], Is.LessThanOrEqualTo(Options().StopAndCopyPages + 5), "the guest is paused once little is left");
            Assert.That(report.BytesSent, Is.GreaterThan(report.PagesPerRound.Sum() * 4096L));
            Assert.That(paused!.PowerState, Is.EqualTo(DomainPowerState.Paused), "the sender keeps its paused domain until told");
            Assert.That(received.Built, Is.True);
            Assert.That(running.GuestCounter, Is.EqualTo(paused.GuestCounter), "the guest's clock goes on from where it stopped");
            Assert.That(running.ConsoleText, Does.Contain("resumed after a live migration"));
        });
    }

    [Test]
    public async Task A_guest_writing_as_fast_as_the_link_is_paused_after_the_last_round_allowed()
    {
        var clock = new ManualClock();
        // 100 MiB/s of writes within 64 MiB, over the 100 MiB/s link: the rounds never shrink.
        var busy = Options() with { DirtyPagesPerSecond = 25600, DirtyWorkingSetBytes = 64 * MiB };
        using var source = new SimulatorBackend(busy, clock);
        var config = Vm(1, dynamicMin: 128 * MiB, dynamicMax: 128 * MiB);
        await StartAsync(source, config);
        using var wire = new MemoryStream();

        var report = await source.MigrateSendAsync(config.Uuid, new LinkStream(wire, clock), progress: null);

        Assert.That(report.PagesPerRound, Has.Count.EqualTo(busy.MaxPrecopyRounds + 2), "the first round, the pre-copy rounds allowed, and stop-and-copy");
        Assert.That(report.PagesPerRound[^1], Is.GreaterThan(busy.StopAndCopyPages), "the guest was paused with much left to send");
    }

    [Test]
    public async Task An_idle_guest_is_paused_as_soon_as_the_first_round_is_sent()
    {
        var clock = new ManualClock();
        var idle = Options() with { DirtyPagesPerSecond = 0 };
        using var source = new SimulatorBackend(idle, clock);
        var config = Vm(1, dynamicMin: 64 * MiB, dynamicMax: 64 * MiB);
        await StartAsync(source, config);
        using var wire = new MemoryStream();

        var report = await source.MigrateSendAsync(config.Uuid, new LinkStream(wire, clock), progress: null);

        Assert.That(report.PagesPerRound, Is.EqualTo(new long[] { 64 * MiB / 4096, 0 }));
    }

    [Test]
    public async Task A_stream_with_one_byte_changed_is_refused_and_the_receiving_domain_stays_unbuilt()
    {
        var clock = new ManualClock();
        using var source = new SimulatorBackend(Options(), clock);
        using var destination = new SimulatorBackend(Options(), new ManualClock());
        var config = Vm(1, dynamicMin: 64 * MiB, dynamicMax: 64 * MiB);
        await StartAsync(source, config);
        using var wire = new MemoryStream();
        await source.MigrateSendAsync(config.Uuid, new LinkStream(wire, clock), progress: null);
        var bytes = wire.ToArray();
        // A byte inside the first page's data (after the 36-byte header, the batch's 5 and the page's 8).
        bytes[36 + 5 + 8 + 100] ^= 0x01;
        await destination.CreateAsync(config);

        var refused = await Assert.ThrowsAsync<MigrationStreamException>(async () => await destination.MigrateReceiveAsync(config.Uuid, new MemoryStream(bytes)));

        Assert.That(refused!.Message, Does.Contain("page 0"));
        Assert.That((await destination.TryGetDomainAsync(config.Uuid))!.Built, Is.False);
        await Assert.ThrowsAsync<MigrationStreamException>(async () => await destination.MigrateReceiveAsync(config.Uuid, new MemoryStream(bytes[..(bytes.Length / 2)])));
    }

    /// <summary>A link of fixed speed: the simulated clock moves as bytes go through it, so the guest writes meanwhile.</summary>
    private sealed class LinkStream(Stream inner, ManualClock clock) : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => inner.Length;

        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }

        public override void Flush() => inner.Flush();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count)
        {
            inner.Write(buffer, offset, count);
            clock.Advance(LinkTimePerMiB * ((double)count / MiB));
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            inner.Write(buffer.Span);
            clock.Advance(LinkTimePerMiB * ((double)buffer.Length / MiB));
            return ValueTask.CompletedTask;
        }
    }
}
