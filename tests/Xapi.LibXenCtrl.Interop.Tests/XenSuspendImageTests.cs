using System.Text;
using Xapi.Xenops;

namespace Xapi.LibXenCtrl.Interop.Tests;

/// <summary>The Xen backend's suspend image header: which VM an image is of, in front of libxl's stream.</summary>
public class XenSuspendImageTests
{
    private static readonly Guid Vm = Guid.Parse("0b6d1c36-e6a0-11f1-8a2f-6b1f7e0c2d11");

    [Test]
    public async Task The_header_is_read_back_and_leaves_the_stream_at_libxls_first_byte()
    {
        using var image = new MemoryStream();
        await XenSuspendImage.WriteHeaderAsync(image, Vm, CancellationToken.None);
        image.Write("LibxlFmt"u8);
        image.Position = 0;
        await XenSuspendImage.ReadHeaderAsync(image, Vm, CancellationToken.None);
        var rest = new byte[8];
        image.ReadExactly(rest);
        Assert.That(Encoding.ASCII.GetString(rest), Is.EqualTo("LibxlFmt"));
    }

    [Test]
    public async Task Another_VMs_image_is_refused_naming_both()
    {
        var other = Guid.NewGuid();
        using var image = new MemoryStream();
        await XenSuspendImage.WriteHeaderAsync(image, other, CancellationToken.None);
        image.Position = 0;
        var e = await Assert.ThrowsAsync<SuspendImageException>(() => XenSuspendImage.ReadHeaderAsync(image, Vm, CancellationToken.None));
        Assert.That(e!.Message, Does.Contain(other.ToString()).And.Contain(Vm.ToString()));
    }

    [TestCase("")]
    [TestCase("xapi-dotnet xen suspend image v1 vm ")]
    [TestCase("XSIMPAT1 the simulator's image, not a Xen one at all.......\n")]
    [TestCase("xapi-dotnet xen suspend image v1 vm 0b6d1c36-e6a0-11f1-8a2f-6b1f7e0c2d11 ")]
    public async Task Anything_else_is_not_a_suspend_image(string content)
    {
        using var image = new MemoryStream(Encoding.ASCII.GetBytes(content));
        var e = await Assert.ThrowsAsync<SuspendImageException>(() => XenSuspendImage.ReadHeaderAsync(image, Vm, CancellationToken.None));
        Assert.That(e!.Message, Does.Contain("not one the Xen backend wrote"));
    }
}
