using Xapi.Database.Replication;
using Xapi.Model;

namespace Xapi.Database.Tests;

/// <summary>
/// A member's copy of the pool database following the master's, through an in-process link
/// that goes through the same encoding as the HTTP one.
/// </summary>
public class ReplicationTests
{
    private static readonly ClassMeta Vm = ApiSchema.Class("VM");
    private static readonly ClassMeta Vbd = ApiSchema.Class("VBD");
    private static readonly FieldMeta NameLabel = Vm.FieldsByName["name_label"];
    private static readonly FieldMeta NameDescription = Vm.FieldsByName["name_description"];

    private sealed class EncodedLink(XapiDatabase master) : IPoolMasterLink
    {
        public int Commits { get; private set; }

        /// <summary>Runs at the master just before a member's commit is taken, as another host's write would.</summary>
        public Action? BeforeCommit { get; set; }

        public ReplicaCommitReply Commit(IReadOnlyList<RowChange> changes, string epoch, long since)
        {
            Commits++;
            BeforeCommit?.Invoke();
            var decoded = ReplicationCodec.DecodeChanges(ReplicationCodec.EncodeChanges(changes));
            var reply = master.CommitFromMemberAsync(decoded, epoch, since).GetAwaiter().GetResult();
            return ReplicationCodec.DecodeCommitReply(ReplicationCodec.EncodeCommitReply(reply));
        }

        public async Task<ReplicaDelta> ChangesAsync(string epoch, long since, TimeSpan wait, CancellationToken cancellationToken) =>
            ReplicationCodec.DecodeDelta(ReplicationCodec.EncodeDelta(await master.ChangesAsync(epoch, since, wait, cancellationToken)));
    }

    private static string CreateVm(XapiDatabase db, string name) =>
        db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = name }).Ref);

    private static string? NameOf(XapiDatabase db, string vm) =>
        db.Snapshot.TryGet(Vm, vm, out var row) ? (string?)row[NameLabel] : null;

    private static (XapiDatabase Master, XapiDatabase Member, EncodedLink Link) Pool()
    {
        var master = new XapiDatabase();
        var member = new XapiDatabase();
        var link = new EncodedLink(master);
        member.FollowMaster(link, master.ChangesSince("", 0));
        return (master, member, link);
    }

    private static async Task CatchUpAsync(XapiDatabase member, IPoolMasterLink link)
    {
        var (epoch, since) = member.MasterPosition;
        member.ApplyFromMaster(await link.ChangesAsync(epoch, since, TimeSpan.Zero, CancellationToken.None));
    }

    [Test]
    public void Following_a_master_replaces_what_the_member_held_with_the_pool_database()
    {
        var master = new XapiDatabase();
        var pooled = CreateVm(master, "in the pool");
        var member = new XapiDatabase();
        var own = CreateVm(member, "the member's before it joined");

        member.FollowMaster(new EncodedLink(master), master.ChangesSince("", 0));

        Assert.Multiple(() =>
        {
            Assert.That(NameOf(member, pooled), Is.EqualTo("in the pool"));
            Assert.That(NameOf(member, own), Is.Null, "the member's own rows are gone");
            Assert.That(member.FollowsMaster, Is.True);
            Assert.That(member.MasterPosition, Is.EqualTo((master.Epoch, master.Snapshot.Generation)));
        });
    }

    [Test]
    public async Task Writes_at_the_master_reach_the_member_with_creates_updates_and_deletes()
    {
        var (master, member, link) = Pool();
        var kept = CreateVm(master, "kept");
        var renamed = CreateVm(master, "old name");
        var deleted = CreateVm(master, "deleted");
        await CatchUpAsync(member, link);
        master.Write(tx => tx.Set(Vm, renamed, NameLabel, "new name"));
        master.Write(tx => tx.Delete(Vm, deleted));

        var waiting = link.ChangesAsync(member.MasterPosition.Epoch, member.MasterPosition.Generation, TimeSpan.FromSeconds(30), CancellationToken.None);
        Assert.That(member.ApplyFromMaster(await waiting), Is.True);

        Assert.Multiple(() =>
        {
            Assert.That(NameOf(member, kept), Is.EqualTo("kept"));
            Assert.That(NameOf(member, renamed), Is.EqualTo("new name"));
            Assert.That(NameOf(member, deleted), Is.Null);
            Assert.That(member.MasterPosition.Generation, Is.EqualTo(master.Snapshot.Generation));
        });
    }

    [Test]
    public async Task A_wait_for_changes_ends_when_the_master_writes()
    {
        var (master, member, link) = Pool();
        var (epoch, since) = member.MasterPosition;
        var waiting = link.ChangesAsync(epoch, since, TimeSpan.FromMinutes(5), CancellationToken.None);
        Assert.That(waiting.IsCompleted, Is.False, "nothing changed yet");

        var vm = CreateVm(master, "new");

        var delta = await waiting.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.That(delta.Rows.Select(r => r.Ref), Does.Contain(vm));
    }

    [Test]
    public void A_member_write_is_committed_by_the_master_and_is_in_the_member_copy_when_it_returns()
    {
        var (master, member, link) = Pool();

        var vm = CreateVm(member, "made on a member");

        Assert.Multiple(() =>
        {
            Assert.That(NameOf(master, vm), Is.EqualTo("made on a member"));
            Assert.That(NameOf(member, vm), Is.EqualTo("made on a member"));
            Assert.That(link.Commits, Is.EqualTo(1));
            Assert.That(member.MasterPosition.Generation, Is.EqualTo(master.Snapshot.Generation));
        });
    }

    [Test]
    public void A_member_write_based_on_a_row_the_master_changed_meanwhile_runs_again_on_the_new_row()
    {
        var (master, member, link) = Pool();
        var vm = CreateVm(member, "v1");
        // Another host renames the VM at the master before this member's write lands.
        link.BeforeCommit = () =>
        {
            link.BeforeCommit = null;
            master.Write(tx => tx.Set(Vm, vm, NameLabel, "renamed elsewhere"));
        };
        var runs = 0;

        member.Write(tx =>
        {
            runs++;
            var name = (string)tx.Get(Vm, vm)[NameLabel]!;
            tx.Set(Vm, vm, NameDescription, $"described after '{name}'");
        });

        var description = (string?)master.Snapshot.Get(Vm, vm)[NameDescription];
        Assert.Multiple(() =>
        {
            Assert.That(runs, Is.EqualTo(2), "the first run read a name the master no longer had");
            Assert.That(description, Is.EqualTo("described after 'renamed elsewhere'"));
            Assert.That(NameOf(master, vm), Is.EqualTo("renamed elsewhere"), "the other host's write is not lost");
            Assert.That(member.Snapshot.Get(Vm, vm)[NameDescription], Is.EqualTo(description));
        });
    }

    [Test]
    public void A_member_deleting_a_row_and_its_children_deletes_them_at_the_master()
    {
        var (master, member, _) = Pool();
        var vm = CreateVm(master, "parent");
        var vbd = master.Write(tx => tx.Create(Vbd, new Dictionary<string, object?> { ["VM"] = vm }).Ref);
        CreateVm(member, "a write that brings the copy up to date");

        member.Write(tx =>
        {
            tx.Delete(Vbd, vbd);
            tx.Delete(Vm, vm);
        });

        Assert.Multiple(() =>
        {
            Assert.That(master.Snapshot.Exists(Vm, vm), Is.False);
            Assert.That(master.Snapshot.Exists(Vbd, vbd), Is.False);
            Assert.That(member.Snapshot.Exists(Vbd, vbd), Is.False);
        });
    }

    [Test]
    public void A_member_whose_master_cannot_be_reached_gets_a_clear_error_and_keeps_its_copy()
    {
        var (master, member, link) = Pool();
        var vm = CreateVm(master, "before");
        CreateVm(member, "caught up");
        link.BeforeCommit = () => throw new HttpRequestException("Connection refused (127.0.0.2:8080)");

        var error = Assert.Throws<ReplicaWriteException>(() => member.Write(tx => tx.Set(Vm, vm, NameLabel, "lost?")));

        Assert.Multiple(() =>
        {
            Assert.That(error!.Message, Does.Contain("Connection refused"));
            Assert.That(NameOf(member, vm), Is.EqualTo("before"), "nothing the master did not take is in the copy");
            Assert.That(NameOf(master, vm), Is.EqualTo("before"));
        });
    }

    [Test]
    public void A_member_behind_a_restarted_master_gets_the_whole_database_again()
    {
        var (master, member, _) = Pool();
        CreateVm(master, "x");
        var restarted = new XapiDatabase();
        var survivor = CreateVm(restarted, "after the restart");
        var (epoch, since) = member.MasterPosition;

        var delta = restarted.ChangesSince(epoch, since);
        member.ApplyFromMaster(delta);

        Assert.Multiple(() =>
        {
            Assert.That(delta.Full, Is.True);
            Assert.That(member.Snapshot.All(Vm).Select(r => r.Ref), Is.EqualTo(new[] { survivor }));
        });
    }

    [Test]
    public void Deletes_the_master_no_longer_remembers_send_the_whole_database()
    {
        var master = new XapiDatabase(tombstoneLimit: 2);
        var member = new XapiDatabase();
        var link = new EncodedLink(master);
        var vms = Enumerable.Range(0, 4).Select(i => CreateVm(master, $"vm{i}")).ToList();
        member.FollowMaster(link, master.ChangesSince("", 0));
        var (epoch, since) = member.MasterPosition;
        foreach (var vm in vms.Take(3))
        {
            master.Write(tx => tx.Delete(Vm, vm));
        }

        var delta = master.ChangesSince(epoch, since);
        member.ApplyFromMaster(delta);

        Assert.Multiple(() =>
        {
            Assert.That(delta.Full, Is.True, "three deletes, two remembered");
            Assert.That(member.Snapshot.All(Vm).Select(r => r.Ref), Is.EqualTo(new[] { vms[3] }));
        });
    }

    [Test]
    public async Task Changes_older_than_the_copy_are_not_applied_again()
    {
        var (master, member, link) = Pool();
        var (epoch, since) = member.MasterPosition;
        var vm = CreateVm(master, "first");
        var stale = master.ChangesSince(epoch, since);
        master.Write(tx => tx.Set(Vm, vm, NameLabel, "second"));
        await CatchUpAsync(member, link);

        Assert.Multiple(() =>
        {
            Assert.That(member.ApplyFromMaster(stale), Is.False);
            Assert.That(NameOf(member, vm), Is.EqualTo("second"));
        });
    }

    [Test]
    public void Member_writes_that_change_nothing_do_not_reach_the_master()
    {
        var (_, member, link) = Pool();

        var count = member.Write(tx => tx.Count(Vm));

        Assert.Multiple(() =>
        {
            Assert.That(count, Is.Zero);
            Assert.That(link.Commits, Is.Zero);
        });
    }

    [Test]
    public void The_encoding_refuses_rows_of_another_datamodel()
    {
        var changes = ReplicationCodec.EncodeChanges([new RowChange(Vm, "OpaqueRef:x", null, new object?[3])]);

        Assert.That(() => ReplicationCodec.DecodeChanges(changes), Throws.TypeOf<FormatException>().With.Message.Contains("different datamodels"));
    }
}
