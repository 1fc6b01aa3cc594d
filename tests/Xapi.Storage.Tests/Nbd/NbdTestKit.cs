using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Xapi.Storage.Tests.Nbd;

/// <summary>Runs real tools (qemu-img, qemu-io) and checks their exit status.</summary>
internal static class Tool
{
    public static async Task<string> RunAsync(string file, params string[] arguments)
    {
        var (status, stdout, stderr) = await TryRunAsync(file, arguments);
        if (status != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', arguments)} exited with {status}: {stderr}");
        }
        return stdout;
    }

    public static async Task<(int Status, string Stdout, string Stderr)> TryRunAsync(string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout, await stderr);
    }

    public static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(stream));
    }

    public static string Sha256(ReadOnlySpan<byte> data) => Convert.ToHexString(SHA256.HashData(data));

    /// <summary>The bytes a qemu image reads as, through qemu-img itself.</summary>
    public static async Task<byte[]> RawContentAsync(string image, string directory)
    {
        var raw = Path.Combine(directory, $"expected-{Guid.NewGuid():N}.raw");
        await RunAsync("qemu-img", "convert", "-U", "-O", "raw", image, raw);
        var bytes = await File.ReadAllBytesAsync(raw);
        File.Delete(raw);
        return bytes;
    }
}

/// <summary>A temporary directory removed after the test.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        // Short: Unix socket paths must fit in 107 bytes.
        Path = Directory.CreateTempSubdirectory("nbd").FullName;
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

/// <summary>A certificate qemu accepts as its own CA: self-signed, CA:TRUE, SAN for 127.0.0.1 and localhost.</summary>
internal static class TestCertificate
{
    public static X509Certificate2 Create()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: false, 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(
            X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment | X509KeyUsageFlags.KeyCertSign, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        // Through PKCS#12 so the private key is usable by SslStream on every platform.
        return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>A directory laid out as qemu's tls-creds-x509 wants for a client.</summary>
    public static void WriteClientDirectory(X509Certificate2 certificate, string directory)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(System.IO.Path.Combine(directory, "ca-cert.pem"), certificate.ExportCertificatePem());
    }
}

/// <summary>
/// A hand-driven NBD peer for malformed and edge-case input: every byte is the test's choice.
/// </summary>
internal sealed class RawNbdPeer : IAsyncDisposable
{
    private readonly TcpClient _client;
    private readonly NetworkStream _stream;

    private RawNbdPeer(TcpClient client)
    {
        _client = client;
        _stream = client.GetStream();
    }

    public static async Task<RawNbdPeer> ConnectAsync(IPEndPoint endpoint)
    {
        var client = new TcpClient();
        await client.ConnectAsync(endpoint);
        return new RawNbdPeer(client);
    }

    public async Task<ushort> ReadGreetingAsync()
    {
        var greeting = await ReadAsync(18);
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(greeting), Is.EqualTo(0x4e42444d41474943));
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(greeting.AsSpan(8)), Is.EqualTo(0x49484156454F5054));
        return BinaryPrimitives.ReadUInt16BigEndian(greeting.AsSpan(16));
    }

    /// <summary>Greeting, then client flags FIXED_NEWSTYLE|NO_ZEROES.</summary>
    public async Task HandshakeAsync()
    {
        await ReadGreetingAsync();
        await WriteAsync(U32(3));
    }

    public Task WriteAsync(byte[] data) => _stream.WriteAsync(data).AsTask();

    public async Task SendOptionAsync(uint option, byte[] data, uint? claimedLength = null)
    {
        var header = new byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(header, 0x49484156454F5054);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), claimedLength ?? (uint)data.Length);
        await WriteAsync([.. header, .. data]);
    }

    public async Task<(uint Option, uint Type, byte[] Data)> ReadOptionReplyAsync()
    {
        var header = await ReadAsync(20);
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(header), Is.EqualTo(0x0003e889045565a9));
        var data = await ReadAsync((int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16)));
        return (BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8)), BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12)), data);
    }

    public static byte[] GoData(string name)
    {
        var bytes = Encoding.UTF8.GetBytes(name);
        return [.. U32((uint)bytes.Length), .. bytes, 0, 0];
    }

    /// <summary>GO and its replies up to the ACK; returns the export size.</summary>
    public async Task<long> GoAsync(string name)
    {
        await SendOptionAsync(7, GoData(name));
        long size = -1;
        while (true)
        {
            var (_, type, data) = await ReadOptionReplyAsync();
            if (type == 1)
            {
                return size;
            }
            Assert.That(type, Is.EqualTo(3u), "GO answered with an error");
            if (BinaryPrimitives.ReadUInt16BigEndian(data) == 0)
            {
                size = (long)BinaryPrimitives.ReadUInt64BigEndian(data.AsSpan(2));
            }
        }
    }

    public async Task SendRequestAsync(ushort command, ulong cookie, ulong offset, uint length, byte[]? payload = null, ushort flags = 0, uint magic = 0x25609513)
    {
        var request = new byte[28];
        BinaryPrimitives.WriteUInt32BigEndian(request, magic);
        BinaryPrimitives.WriteUInt16BigEndian(request.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(request.AsSpan(6), command);
        BinaryPrimitives.WriteUInt64BigEndian(request.AsSpan(8), cookie);
        BinaryPrimitives.WriteUInt64BigEndian(request.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(request.AsSpan(24), length);
        await WriteAsync([.. request, .. payload ?? []]);
    }

    /// <summary>A simple reply: (error, cookie); a READ's data is left unread.</summary>
    public async Task<(uint Error, ulong Cookie)> ReadSimpleReplyAsync()
    {
        var reply = await ReadAsync(16);
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(reply), Is.EqualTo(0x67446698));
        return (BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(4)), BinaryPrimitives.ReadUInt64BigEndian(reply.AsSpan(8)));
    }

    public async Task<byte[]> ReadAsync(int count)
    {
        var buffer = new byte[count];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await _stream.ReadExactlyAsync(buffer, timeout.Token);
        return buffer;
    }

    /// <summary>True when the server closes the connection (EOF or reset) within the time given.</summary>
    public async Task<bool> ClosedByServerAsync(TimeSpan within)
    {
        using var timeout = new CancellationTokenSource(within);
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                if (await _stream.ReadAsync(buffer, timeout.Token) == 0)
                {
                    return true;
                }
            }
        }
        catch (IOException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public static byte[] U32(uint value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, value);
        return bytes;
    }

    public ValueTask DisposeAsync()
    {
        _client.Dispose();
        return ValueTask.CompletedTask;
    }
}
