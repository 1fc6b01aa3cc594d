using Xapi.LibXenCtrl.Interop;
using Xapi.Xenops;

namespace Xapi.LibXenCtrl.Interop.Tests;

public class LibxlErrorTests
{
    [Test]
    public void Every_libxl_error_has_its_header_name()
    {
        Assert.That(LibxlException.CNames.Keys, Is.EquivalentTo(Enum.GetValues<LibxlError>()));
    }

    [Test]
    public void A_domain_that_is_not_there_is_a_typed_seam_exception_naming_the_call_and_domid()
    {
        var e = LibxlException.Create(-21, "libxl_domain_pause", 7);
        Assert.That(e, Is.TypeOf<LibxlDomainNotFoundException>().And.InstanceOf<XenopsException>());
        Assert.That(((LibxlDomainNotFoundException)e).DomId, Is.EqualTo(7u));
        Assert.That(e.Message, Is.EqualTo("libxl_domain_pause failed: ERROR_DOMAIN_NOTFOUND (-21): domain 7"));
    }

    [TestCase(-5, typeof(LibxlOutOfMemoryException))]
    [TestCase(-6, typeof(LibxlInvalidArgumentException))]
    [TestCase(-9, typeof(LibxlTimeoutException))]
    [TestCase(-17, typeof(LibxlDeviceExistsException))]
    [TestCase(-10, typeof(LibxlNoParavirtException))]
    [TestCase(-3, typeof(LibxlException))]
    public void Error_codes_become_their_exception_types(int code, Type expected)
    {
        Assert.That(LibxlException.Create(code, "f"), Is.TypeOf(expected));
    }

    [Test]
    public void An_unknown_code_keeps_its_number_and_no_error_name()
    {
        var e = LibxlException.Create(-99, "libxl_x");
        Assert.Multiple(() =>
        {
            Assert.That(e.Error, Is.Null);
            Assert.That(e.Code, Is.EqualTo(-99));
            Assert.That(e.Message, Is.EqualTo("libxl_x failed: unknown libxl error (-99)"));
        });
    }

    [Test]
    public void Success_codes_pass_through()
    {
        Assert.That(LibxlException.ThrowIfFailed(0, "f"), Is.Zero);
        Assert.Throws<LibxlException>(() => LibxlException.ThrowIfFailed(-3, "f"));
    }
}
