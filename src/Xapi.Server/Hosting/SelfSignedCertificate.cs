using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Xapi.Server.Hosting;

/// <summary>The host's TLS certificate: generated on first boot and kept in the data dir.</summary>
public static class SelfSignedCertificate
{
    private const string FileName = "xapi-ssl.pfx";

    public static bool Exists(string dataDir) => File.Exists(Path.Combine(dataDir, FileName));

    public static X509Certificate2 LoadOrCreate(string dataDir, string hostname, out bool created)
    {
        var path = Path.Combine(dataDir, FileName);
        created = false;
        if (File.Exists(path))
        {
            try
            {
                var loaded = X509CertificateLoader.LoadPkcs12FromFile(path, password: null);
                if (!loaded.HasPrivateKey)
                {
                    throw new CryptographicException("it holds no private key");
                }
                return loaded;
            }
            catch (CryptographicException e)
            {
                // Not regenerated behind the operator's back: clients may have pinned this certificate.
                throw new StartupException(
                    $"{path} is not a usable PKCS#12 certificate ({e.Message}); restore it from a backup, or move it aside to generate a new self-signed one (clients that trusted the old one must accept the new one).", e);
            }
        }
        using var key = RSA.Create(2048);
        var request = new CertificateRequest($"CN={hostname}", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(hostname);
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(10));
        var pfx = certificate.Export(X509ContentType.Pfx);
        File.WriteAllBytes(path, pfx);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        created = true;
        return X509CertificateLoader.LoadPkcs12(pfx, password: null);
    }
}
