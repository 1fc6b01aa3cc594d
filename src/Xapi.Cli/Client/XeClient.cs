using System.Globalization;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Xapi.Cli.ThinCli;

namespace Xapi.Cli.Client;

/// <summary>
/// The thin client: sends the command line to <c>POST /cli</c> and carries out what the server
/// asks (print, upload, download, exit), exactly as a real host's <c>xe</c> does.
/// </summary>
public sealed class XeClient(XeOptions options, TextWriter stdout, TextWriter stderr)
{
    private const int CopyBlock = 1 << 20;

    public const string Usage = """
        Usage:
          xe <command>
            [ -s <server> ]            XenServer host
            [ -p <port> ]              XenServer port number
            [ -u <username> -pw <password> | -pwf <password file> ]
                                       User authentication (password or file)
            [ --nossl ]                Disable SSL/TLS
            [ --debug ]                Enable debug output
            [ --debug-on-fail ]        Enable debug output only on failure
            [ --minimal ]              Output only values in a comma-separated lists
            [ <other arguments> ... ]  Command-specific options

        A full list of commands can be obtained by running
          xe help -s <server> -p <port>

        """;

    public async Task<int> RunAsync(CancellationToken cancellationToken)
    {
        await using var connection = await ConnectAsync(options.Server, options.EffectivePort, options.UseSsl, cancellationToken).ConfigureAwait(false);
        var argv = new List<string>(options.Arguments) { "username=" + options.User, "password=" + options.Password };
        var body = Encoding.UTF8.GetBytes(string.Join('\n', argv));
        var head = Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture,
            $"POST /cli HTTP/1.0\r\nUser-agent: xe-cli/Unix/{CliWire.Major}.{CliWire.Minor}\r\noriginator: cli\r\ncontent-length: {body.Length}\r\n\r\n"));
        await connection.WriteAsync(head, cancellationToken).ConfigureAwait(false);
        await connection.WriteAsync(body, cancellationToken).ConfigureAwait(false);
        await connection.FlushAsync(cancellationToken).ConfigureAwait(false);

        var version = await CliWire.ReadGreetingAsync(connection, cancellationToken).ConfigureAwait(false)
            ?? throw new XeFatalException("Failed to contact a running management agent.\nTry specifying a server name and port.");
        Debug($"Server has protocol version {version.Major}.{version.Minor}. Client has {CliWire.Major}.{CliWire.Minor}");
        if (version.Major != CliWire.Major)
        {
            throw new XeFatalException($"Protocol version mismatch: Server has protocol version {version.Major}.{version.Minor}. Client has {CliWire.Major}.{CliWire.Minor}.\nTry specifying a server name and port on the command-line.");
        }
        await connection.WriteAsync(CliWire.Greeting(), cancellationToken).ConfigureAwait(false);
        await connection.FlushAsync(cancellationToken).ConfigureAwait(false);

        while (true)
        {
            var message = await CliWire.ReadAsync(connection, cancellationToken).ConfigureAwait(false)
                ?? throw new XeFatalException("Lost connection to the server.");
            Debug($"Read: {message}");
            switch (message)
            {
                case CliPrint print:
                    await stdout.WriteLineAsync(print.Text).ConfigureAwait(false);
                    break;
                case CliPrintStderr print:
                    await stdout.FlushAsync(cancellationToken).ConfigureAwait(false);
                    await stderr.WriteAsync(print.Text).ConfigureAwait(false);
                    break;
                case CliDebug debug:
                    Debug($"debug from server: {debug.Text}");
                    break;
                case CliError error:
                    await stdout.FlushAsync(cancellationToken).ConfigureAwait(false);
                    await stderr.WriteAsync($"Error code: {error.Code}\nError parameters: {string.Join(", ", error.Parameters)}\n").ConfigureAwait(false);
                    break;
                case CliExit exit:
                    return exit.Code;
                case CliLoad load:
                    await SendFileAsync(connection, load.FileName, cancellationToken).ConfigureAwait(false);
                    break;
                case CliPrompt:
                    await AnswerPromptAsync(connection, cancellationToken).ConfigureAwait(false);
                    break;
                case CliHttpPut put:
                    if (!await ReportAsync(connection, () => PutAsync(put.FileName, put.Url, cancellationToken), cancellationToken).ConfigureAwait(false))
                    {
                        return 1;
                    }
                    break;
                case CliHttpGet get:
                    if (!await ReportAsync(connection, () => GetAsync(get.FileName, get.Url, cancellationToken), cancellationToken).ConfigureAwait(false))
                    {
                        return 1;
                    }
                    break;
                default:
                    throw new XeFatalException($"Unexpected message from server: {message}");
            }
        }
    }

    // A transfer the client itself cannot do (no such file) ends the command with status 1 after
    // telling the server; any other failure is the server's to explain over the protocol.
    private async Task<bool> ReportAsync(Stream connection, Func<Task> transfer, CancellationToken cancellationToken)
    {
        try
        {
            await transfer().ConfigureAwait(false);
            await CliWire.WriteAsync(connection, new CliResponse(CliResponseKind.Ok), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (XeClientSideException e)
        {
            await CliWire.WriteAsync(connection, new CliResponse(CliResponseKind.Failed), cancellationToken).ConfigureAwait(false);
            await stderr.WriteLineAsync($"Operation failed. Error: {e.Message}").ConfigureAwait(false);
            return false;
        }
        catch (Exception e) when (e is IOException or SocketException or InvalidDataException or HttpTransferException)
        {
            Debug($"transfer failure: {e.Message}");
            await CliWire.WriteAsync(connection, new CliResponse(CliResponseKind.Failed), cancellationToken).ConfigureAwait(false);
            return true;
        }
    }

    private async Task SendFileAsync(Stream connection, string fileName, CancellationToken cancellationToken)
    {
        FileStream file;
        try
        {
            file = File.OpenRead(fileName);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            await CliWire.WriteAsync(connection, new CliResponse(CliResponseKind.Failed), cancellationToken).ConfigureAwait(false);
            return;
        }
        await using (file.ConfigureAwait(false))
        {
            await CliWire.WriteAsync(connection, new CliResponse(CliResponseKind.Ok), cancellationToken).ConfigureAwait(false);
            await CliWire.WriteAsync(connection, new CliBlobChunk(checked((int)file.Length)), cancellationToken).ConfigureAwait(false);
            await file.CopyToAsync(connection, CopyBlock, cancellationToken).ConfigureAwait(false);
            await CliWire.WriteAsync(connection, new CliBlobEnd(), cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task AnswerPromptAsync(Stream connection, CancellationToken cancellationToken)
    {
        var line = Encoding.UTF8.GetBytes(await Console.In.ReadLineAsync(cancellationToken).ConfigureAwait(false) ?? "");
        await connection.WriteAsync(CliWire.Encode(new CliBlobChunk(line.Length)), cancellationToken).ConfigureAwait(false);
        await connection.WriteAsync(line, cancellationToken).ConfigureAwait(false);
        await CliWire.WriteAsync(connection, new CliBlobEnd(), cancellationToken).ConfigureAwait(false);
    }

    private async Task PutAsync(string fileName, string url, CancellationToken cancellationToken)
    {
        if (!File.Exists(fileName))
        {
            throw new XeClientSideException($"file '{fileName}' does not exist");
        }
        var target = Target(url);
        await using var file = File.OpenRead(fileName);
        await using var connection = await ConnectAsync(target.Host, target.Port, target.Ssl, cancellationToken).ConfigureAwait(false);
        var head = string.Create(CultureInfo.InvariantCulture, $"PUT {target.PathAndQuery} HTTP/1.0\r\nContent-length: {file.Length}\r\n\r\n");
        await connection.WriteAsync(Encoding.ASCII.GetBytes(head), cancellationToken).ConfigureAwait(false);
        await connection.FlushAsync(cancellationToken).ConfigureAwait(false);
        // As real xe: the server answers the head before it takes the body, so a refusal (no
        // such VDI, a file larger than the disk) costs no upload.
        var status = await ReadResponseHeadAsync(connection, cancellationToken).ConfigureAwait(false);
        if (status != 200)
        {
            throw new HttpTransferException($"PUT answered {status}");
        }
        await file.CopyToAsync(connection, CopyBlock, cancellationToken).ConfigureAwait(false);
        await connection.FlushAsync(cancellationToken).ConfigureAwait(false);
        // Unlike real xe, stay until the server ends its reply: Kestrel takes a client's FIN for
        // an abort and drops the end of the body it has not read yet.
        await connection.CopyToAsync(Stream.Null, cancellationToken).ConfigureAwait(false);
    }

    private async Task GetAsync(string fileName, string url, CancellationToken cancellationToken)
    {
        var target = Target(url);
        await using var connection = await ConnectAsync(target.Host, target.Port, target.Ssl, cancellationToken).ConfigureAwait(false);
        var head = $"GET {target.PathAndQuery} HTTP/1.0\r\n\r\n";
        await connection.WriteAsync(Encoding.ASCII.GetBytes(head), cancellationToken).ConfigureAwait(false);
        await connection.FlushAsync(cancellationToken).ConfigureAwait(false);
        var status = await ReadResponseHeadAsync(connection, cancellationToken).ConfigureAwait(false);
        if (status != 200)
        {
            throw new HttpTransferException($"GET answered {status}");
        }
        Stream output;
        if (fileName.Length == 0)
        {
            output = Console.OpenStandardOutput();
        }
        else
        {
            try
            {
                // Never over an existing file, and readable only by its owner: it holds a disk.
                var create = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
                if (!OperatingSystem.IsWindows())
                {
                    create.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
                }
                output = new FileStream(fileName, create);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new XeClientSideException(e.Message);
            }
        }
        await using (output.ConfigureAwait(false))
        {
            await connection.CopyToAsync(output, CopyBlock, cancellationToken).ConfigureAwait(false);
        }
    }

    // Reads the status line and headers byte by byte, so that the body stays in the stream.
    private static async Task<int> ReadResponseHeadAsync(Stream connection, CancellationToken cancellationToken)
    {
        var head = new List<byte>();
        var one = new byte[1];
        while (head.Count < 64 * 1024)
        {
            if (await connection.ReadAsync(one, cancellationToken).ConfigureAwait(false) == 0)
            {
                throw new EndOfStreamException("the server closed the transfer before answering");
            }
            head.Add(one[0]);
            if (head.Count >= 4 && head[^1] == '\n' && head[^2] == '\r' && head[^3] == '\n' && head[^4] == '\r')
            {
                break;
            }
        }
        var statusLine = Encoding.ASCII.GetString(head.ToArray()).Split("\r\n")[0].Split(' ');
        return statusLine.Length >= 2 && int.TryParse(statusLine[1], NumberStyles.None, CultureInfo.InvariantCulture, out var code) ? code : 0;
    }

    private (string Host, int Port, bool Ssl, string PathAndQuery) Target(string url)
    {
        if (Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https")
        {
            var ssl = uri.Scheme == "https";
            return (uri.Host, uri.IsDefaultPort ? options.EffectivePort : uri.Port, ssl && options.UseSsl, uri.PathAndQuery);
        }
        // A bare path: the server we are talking to.
        return (options.Server, options.EffectivePort, options.UseSsl, url);
    }

    private static async Task<Stream> ConnectAsync(string host, int port, bool ssl, CancellationToken cancellationToken)
    {
        var tcp = new TcpClient { NoDelay = true };
        try
        {
            await tcp.ConnectAsync(host, port, cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.HostNotFound)
        {
            tcp.Dispose();
            throw new XeFatalException($"Host '{host}' not found.");
        }
        catch (SocketException)
        {
            tcp.Dispose();
            throw new XeFatalException("Unable to contact server. Please check server and port settings.");
        }
        Stream stream = tcp.GetStream();
        if (ssl)
        {
            // As real xe through stunnel: the host's certificate is not verified (hosts use self-signed ones).
            var tls = new SslStream(stream, leaveInnerStreamOpen: false, (_, _, _, _) => true);
            await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = host }, cancellationToken).ConfigureAwait(false);
            stream = tls;
        }
        return stream;
    }

    private void Debug(string text)
    {
        if (options.Debug)
        {
            stderr.WriteLine(text);
        }
    }
}

/// <summary>A transfer failure on the client's side (no such file): reported, and the command ends.</summary>
public sealed class XeClientSideException(string message) : Exception(message);

public sealed class HttpTransferException(string message) : Exception(message);
