using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Logging;
using Xapi.Cli.Commands;
using Xapi.Cli.ThinCli;
using Xapi.Model;
using Xapi.Protocol;
using Xapi.Server.Dispatch;

namespace Xapi.Server.Http;

/// <summary>
/// The server side of the thin-CLI protocol on <c>POST /cli</c>. Real <c>xe</c> reads the protocol
/// greeting straight after its request, with no HTTP response head, so this endpoint takes the
/// connection over below HTTP: a connection middleware recognises the request line and serves
/// the command itself; every other connection goes on to Kestrel's HTTP untouched.
/// </summary>
public sealed class CliEndpoint(Dispatcher dispatcher, ILogger<CliEndpoint> logger)
{
    public const string Path = "/cli";

    /// <summary>A command line is a few hundred bytes; this bounds what one request may hold.</summary>
    public const int MaxRequestBytes = 1024 * 1024;

    private const int MaxHeadBytes = 64 * 1024;

    /// <summary>Kestrel's own bound on request headers; the thin-CLI request gets the same.</summary>
    private static readonly TimeSpan RequestLineTimeout = TimeSpan.FromSeconds(30);

    private static readonly byte[] RequestLinePrefix = "POST /cli"u8.ToArray();

    /// <summary>The command table this server runs: the one this project's <c>xe</c> is built with.</summary>
    public CliCommandTable Table { get; init; } = CliCommandTable.Standard;

    /// <summary>
    /// Connection middleware: serves thin-CLI connections, gives real xe's uploads an input that
    /// tolerates its early close, and passes every other connection on untouched.
    /// </summary>
    /// <param name="idleTimeout">How long a new connection may stay silent, as Kestrel's keep-alive timeout bounds it later.</param>
    public static ConnectionDelegate Intercept(ConnectionDelegate next, Func<CliEndpoint> endpoint, TimeSpan idleTimeout) => async connection =>
    {
        var input = connection.Transport.Input;
        // The request line is read here, before Kestrel's own timeouts apply: a client that sends
        // nothing, or dribbles its first line, is closed as Kestrel would close it.
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(connection.ConnectionClosed);
        deadline.CancelAfter(idleTimeout);
        var started = false;
        while (true)
        {
            ReadResult read;
            try
            {
                read = await input.ReadAsync(deadline.Token);
            }
            catch (OperationCanceledException)
            {
                // Closed as Kestrel closes an idle connection: a FIN, not a reset.
                await connection.Transport.Output.CompleteAsync();
                return;
            }
            if (!started && read.Buffer.Length > 0)
            {
                started = true;
                deadline.CancelAfter(RequestLineTimeout);
            }
            var cli = IsCliRequest(read.Buffer);
            var upload = cli is not true && ThinClientUpload.MayBe(read.Buffer) ? ThinClientUpload.Is(read.Buffer, read.IsCompleted) : false;
            if ((cli is null || upload is null) && !read.IsCompleted)
            {
                // Not enough bytes to tell yet: wait for more without consuming any.
                input.AdvanceTo(read.Buffer.Start, read.Buffer.End);
                continue;
            }
            input.AdvanceTo(read.Buffer.Start);
            if (cli == true)
            {
                await endpoint().ServeAsync(connection);
                return;
            }
            if (upload == true)
            {
                await ThinClientUpload.ServeAsync(connection, next);
                return;
            }
            break;
        }
        await next(connection);
    };

    // True for "POST /cli " or "POST /cli?", false for anything else, null while it could still be either.
    private static bool? IsCliRequest(ReadOnlySequence<byte> buffer)
    {
        Span<byte> start = stackalloc byte[RequestLinePrefix.Length + 1];
        var available = (int)Math.Min(buffer.Length, start.Length);
        buffer.Slice(0, available).CopyTo(start);
        var compared = Math.Min(available, RequestLinePrefix.Length);
        if (!start[..compared].SequenceEqual(RequestLinePrefix.AsSpan(0, compared)))
        {
            return false;
        }
        if (available < start.Length)
        {
            return null;
        }
        return start[^1] is (byte)' ' or (byte)'?';
    }

    private async Task ServeAsync(ConnectionContext connection)
    {
        var cancellation = connection.ConnectionClosed;
        var input = connection.Transport.Input.AsStream(leaveOpen: true);
        var output = connection.Transport.Output.AsStream(leaveOpen: true);
        var remote = (connection.RemoteEndPoint as IPEndPoint)?.Address;
        try
        {
            string[]? argv;
            using (var requestDeadline = CancellationTokenSource.CreateLinkedTokenSource(cancellation))
            {
                requestDeadline.CancelAfter(RequestLineTimeout);
                argv = await ReadRequestAsync(input, requestDeadline.Token);
            }
            if (argv is null)
            {
                await output.WriteAsync("HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\r\n"u8.ToArray(), cancellation);
                return;
            }
            await output.WriteAsync(CliWire.Greeting(), cancellation);
            await output.FlushAsync(cancellation);
            if (await CliWire.ReadGreetingAsync(input, cancellation) is not { Major: CliWire.Major })
            {
                return; // Not a client of this protocol version: nothing it could read.
            }
            var args = CliArgs.Parse(argv).WithoutCredentials(out var user, out var password);
            var console = new ThinConsole(input, output, cancellation);
            var api = new InProcessApi(dispatcher, remote, ClientFacingBase(connection), cancellation);
            int status;
            try
            {
                status = await Table.ExecuteAsync(args, () => api.LoginAsync(user ?? "", password ?? ""), console, cancellation);
            }
            finally
            {
                await api.LogoutAsync();
            }
            logger.LogInformation("xe {Command} from {Remote} exited {Status}", args.Command, remote, status);
            await CliWire.WriteAsync(output, new CliExit(status), cancellation);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ConnectionResetException or OperationCanceledException)
        {
            // The client went away or broke the framing: there is no one left to tell.
            logger.LogInformation("xe connection from {Remote} ended early: {Reason}", remote, e.Message);
        }
        finally
        {
            await connection.Transport.Output.CompleteAsync();
        }
    }

    private static Uri ClientFacingBase(ConnectionContext connection)
    {
        var secure = connection.Features.Get<ITlsHandshakeFeature>() is not null;
        var local = connection.LocalEndPoint as IPEndPoint;
        var host = local is null ? "localhost" : local.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{local.Address}]" : local.Address.ToString();
        return new Uri(string.Create(CultureInfo.InvariantCulture, $"{(secure ? "https" : "http")}://{host}:{local?.Port ?? 80}/"));
    }

    // The request head and body: newline-separated argv. Null when it is not a request this endpoint can read.
    private static async Task<string[]?> ReadRequestAsync(Stream input, CancellationToken cancellation)
    {
        var head = new List<byte>(512);
        var one = new byte[1];
        while (true)
        {
            if (head.Count >= MaxHeadBytes || await input.ReadAsync(one, cancellation) == 0)
            {
                return null;
            }
            head.Add(one[0]);
            if (head.Count >= 4 && head[^1] == '\n' && head[^2] == '\r' && head[^3] == '\n' && head[^4] == '\r')
            {
                break;
            }
        }
        long? length = null;
        foreach (var line in Encoding.Latin1.GetString(head.ToArray()).Split("\r\n").Skip(1))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0 && line[..colon].Trim().Equals("content-length", StringComparison.OrdinalIgnoreCase)
                && long.TryParse(line[(colon + 1)..].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var declared))
            {
                length = declared;
            }
        }
        if (length is not { } bodyLength || bodyLength > MaxRequestBytes)
        {
            return null;
        }
        var body = new byte[bodyLength];
        if (await CliWire.ReadAtMostAsync(input, body, cancellation) < bodyLength)
        {
            return null;
        }
        return Encoding.UTF8.GetString(body).Split('\n');
    }

    /// <summary>The client's terminal and files, over the thin-CLI messages.</summary>
    private sealed class ThinConsole(Stream input, Stream output, CancellationToken cancellation) : ICliErrorConsole, ICliPromptConsole
    {
        /// <summary>A typed answer is a line; this bounds what one may hold.</summary>
        private const int MaxPromptBytes = 64 * 1024;

        public ValueTask PrintAsync(string line) => new(CliWire.WriteAsync(output, new CliPrint(line), cancellation));

        public ValueTask PrintStderrAsync(string text) => new(CliWire.WriteAsync(output, new CliPrintStderr(text), cancellation));

        public ValueTask ErrorAsync(string code, IReadOnlyList<string> parameters) =>
            new(CliWire.WriteAsync(output, new CliError(code, parameters), cancellation));

        public async ValueTask<bool> HttpPutAsync(string fileName, string url)
        {
            await CliWire.WriteAsync(output, new CliHttpPut(fileName, url), cancellation);
            return await AwaitOutcomeAsync();
        }

        public async ValueTask<bool> HttpGetAsync(string fileName, string url)
        {
            await CliWire.WriteAsync(output, new CliHttpGet(fileName, url), cancellation);
            return await AwaitOutcomeAsync();
        }

        // The client answers Prompt with the line it read as blobs: chunks of raw bytes, then End.
        public async ValueTask<string> PromptAsync()
        {
            await CliWire.WriteAsync(output, new CliPrompt(), cancellation);
            var line = new List<byte>();
            while (true)
            {
                switch (await CliWire.ReadAsync(input, cancellation))
                {
                    case CliBlobChunk { Length: >= 0 } chunk when line.Count + chunk.Length <= MaxPromptBytes:
                        var bytes = new byte[chunk.Length];
                        if (await CliWire.ReadAtMostAsync(input, bytes, cancellation) < bytes.Length)
                        {
                            throw new EndOfStreamException("the client went away during a prompt");
                        }
                        line.AddRange(bytes);
                        continue;
                    case CliBlobEnd:
                        return Encoding.UTF8.GetString(line.ToArray());
                    case null:
                        throw new EndOfStreamException("the client went away during a prompt");
                    case var other:
                        throw new InvalidDataException($"unexpected {other} from the client during a prompt");
                }
            }
        }

        // The client sends Wait heartbeats while a transfer runs, then OK or Failed.
        private async Task<bool> AwaitOutcomeAsync()
        {
            while (true)
            {
                switch (await CliWire.ReadAsync(input, cancellation))
                {
                    case CliResponse { Kind: CliResponseKind.Wait }:
                        continue;
                    case CliResponse { Kind: CliResponseKind.Ok }:
                        return true;
                    case CliResponse { Kind: CliResponseKind.Failed }:
                        return false;
                    case null:
                        throw new EndOfStreamException("the client went away during a transfer");
                    case var other:
                        throw new InvalidDataException($"unexpected {other} from the client during a transfer");
                }
            }
        }
    }

    /// <summary>The API as a command calls it: straight into the dispatcher, with the command's session.</summary>
    private sealed class InProcessApi(Dispatcher dispatcher, IPAddress? remote, Uri clientFacingBase, CancellationToken cancellation) : ICliApi
    {
        private string? _session;

        public string Session => _session ?? throw new InvalidOperationException("the command has not logged in");

        public Uri ClientFacingBase => clientFacingBase;

        public async ValueTask<ICliApi> LoginAsync(string user, string password)
        {
            _session = (string)(await InvokeAsync(ApiNames.SessionLoginWithPassword, [user, password, ApiNames.LoginVersion, ApiNames.CliOriginator]))!;
            return this;
        }

        public async ValueTask LogoutAsync()
        {
            if (_session is { } session)
            {
                _session = null;
                await dispatcher.InvokeAsync(new RpcRequest(ApiNames.SessionLogout, [session], RpcDialect.XmlRpc, default), CancellationToken.None);
            }
        }

        public ValueTask<object?> CallAsync(string method, params object?[] args) => InvokeAsync(method, [Session, .. args]);

        private async ValueTask<object?> InvokeAsync(string method, object?[] args)
        {
            var (result, error) = await dispatcher.InvokeAsync(new RpcRequest(method, args, RpcDialect.XmlRpc, default), cancellation, false, remote);
            return error is null ? result : throw error;
        }
    }

    private static class ApiNames
    {
        public const string SessionLoginWithPassword = "session.login_with_password";
        public const string SessionLogout = "session.logout";
        public const string LoginVersion = "1.0";
        public const string CliOriginator = "cli";
    }
}
