using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Xapi.Model;
using Xapi.Protocol;

namespace Xapi.Server.Tests;

public class LoginThrottleTests
{
    private static readonly TimeSpan Delay = TimeSpan.FromSeconds(1);

    [Test]
    public async Task A_source_gets_one_password_guess_at_a_time_its_failure_delay_included()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.FailedLoginDelay = Delay);
        var guessers = Enumerable.Range(0, 3).Select(_ => SourceClient(daemon, IPAddress.Loopback)).ToList();
        var other = SourceClient(daemon, IPAddress.Parse("127.0.0.2"));
        var watch = Stopwatch.StartNew();
        var sameSource = guessers.Select(c => TimedFailureAsync(c.Client, watch)).ToList();
        var otherSource = TimedFailureAsync(other.Client, watch);
        var sameTimes = await Task.WhenAll(sameSource);
        var otherTime = await otherSource;
        Assert.Multiple(() =>
        {
            // Taken in turn: the last of three answers after three delays, not after one.
            Assert.That(sameTimes.Max(), Is.GreaterThanOrEqualTo(3 * Delay - TimeSpan.FromMilliseconds(100)));
            Assert.That(otherTime, Is.LessThan(2 * Delay), "another address is not held up");
        });
        foreach (var (client, http) in guessers.Append(other))
        {
            client.Dispose();
            http.Dispose();
        }
    }

    [Test]
    public async Task The_right_password_still_logs_in_after_wrong_guesses_from_the_same_address()
    {
        await using var daemon = await TestDaemon.StartAsync(o => o.FailedLoginDelay = TimeSpan.FromMilliseconds(200));
        using var client = daemon.Client();
        await XenApiAssert.FailsAsync(() => client.LoginAsync("root", "wrong"), "SESSION_AUTHENTICATION_FAILED");
        Assert.That(await client.LoginAsync("root", TestDaemon.Password), Does.StartWith("OpaqueRef:"));
        Assert.That(daemon.Service<SessionManager>().Throttle.ActiveSources, Is.Zero, "finished attempts leave nothing behind");
    }

    private static async Task<TimeSpan> TimedFailureAsync(XenApiClient client, Stopwatch watch)
    {
        await XenApiAssert.FailsAsync(() => client.LoginAsync("root", "wrong"), "SESSION_AUTHENTICATION_FAILED");
        return watch.Elapsed;
    }

    /// <summary>A client whose connections come from <paramref name="source"/> (any 127.0.0.0/8 address).</summary>
    internal static (XenApiClient Client, HttpClient Http) SourceClient(TestDaemon daemon, IPAddress source)
    {
        var http = new HttpClient(new SocketsHttpHandler
        {
            ConnectCallback = async (context, token) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
                socket.Bind(new IPEndPoint(source, 0));
                await socket.ConnectAsync(context.DnsEndPoint, token);
                return new NetworkStream(socket, ownsSocket: true);
            },
        });
        return (new XenApiClient(daemon.Uri, RpcDialect.JsonRpcV2, http), http);
    }
}
