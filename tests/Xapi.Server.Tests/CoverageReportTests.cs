using Xapi.Model;

namespace Xapi.Server.Tests;

/// <summary>Keeps the gap visible: how much of the datamodel answers without NOT_IMPLEMENTED.</summary>
public class CoverageReportTests
{
    [Test]
    public async Task Report_messages_answered_and_missing_by_class()
    {
        await using var daemon = await TestDaemon.StartAsync();
        var dispatcher = daemon.Service<Dispatcher>();
        var rows = ApiSchema.Classes
            .Select(c =>
            {
                var published = c.Messages.Where(m => !m.IsInternal && m.Lifecycle != Lifecycle.Removed).ToList();
                return (Class: c.Name, Answered: published.Count(dispatcher.Answers), Missing: published.Where(m => !dispatcher.Answers(m)).ToList());
            })
            .ToList();
        var answered = rows.Sum(r => r.Answered);
        var missing = rows.Sum(r => r.Missing.Count);
        TestContext.Out.WriteLine($"datamodel messages answered: {answered}, not implemented: {missing}");
        foreach (var row in rows.Where(r => r.Missing.Count > 0).OrderByDescending(r => r.Missing.Count))
        {
            TestContext.Out.WriteLine($"  {row.Class,-22} answered {row.Answered,4}  missing {row.Missing.Count,4}: {string.Join(", ", row.Missing.Take(6).Select(m => m.Name))}{(row.Missing.Count > 6 ? ", …" : "")}");
        }
        var total = ApiSchema.Classes.Sum(c => c.Messages.Count(m => !m.IsInternal && m.Lifecycle != Lifecycle.Removed));
        Assert.Multiple(() =>
        {
            Assert.That(answered + missing, Is.EqualTo(total));
            Assert.That(dispatcher.Answers(ApiSchema.MessagesByWireName["session.login_with_password"]), Is.True);
            Assert.That(dispatcher.Answers(ApiSchema.MessagesByWireName["VM.set_VCPUs_max"]), Is.True, "custom accessors fall back to generic");
            Assert.That(dispatcher.Answers(ApiSchema.MessagesByWireName["VM.start"]), Is.False, "VM lifecycle is not built yet");
        });
    }
}
