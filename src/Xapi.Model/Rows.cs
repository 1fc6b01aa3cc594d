namespace Xapi.Model;

/// <summary>
/// Read access to rows by class, as the database's snapshots and transactions give it. The
/// generated typed accessors (<c>db.Get(vm).PowerState</c>) are built on it, so hand-written
/// code never indexes fields by name.
/// </summary>
public interface IRowReader
{
    bool TryGetRowValues(ClassMeta cls, string reference, out IReadOnlyList<object?> values);

    /// <exception cref="XenApiException">HANDLE_INVALID when there is no such object.</exception>
    IReadOnlyList<object?> GetRowValues(ClassMeta cls, string reference);

    IEnumerable<(string Ref, IReadOnlyList<object?> Values)> AllRowValues(ClassMeta cls);

    /// <summary>A computed one-to-many field (<c>VM.VBDs</c>): the objects pointing at <paramref name="reference"/>.</summary>
    IReadOnlyList<object?> ManyField(FieldMeta field, string reference);
}

/// <summary>Writes within one transaction; nothing is visible to others until it commits.</summary>
public interface IRowWriter : IRowReader
{
    /// <summary>Inserts a row whose values start at their datamodel defaults; returns its ref.</summary>
    string CreateRow(ClassMeta cls, Action<object?[]> init, string? reference = null);

    void UpdateRow(ClassMeta cls, string reference, Action<object?[]> edit);

    void DeleteRow(ClassMeta cls, string reference);
}

/// <summary>A typed reference (<c>VMRef</c>, …) to an object of a datamodel class.</summary>
public interface IObjectRef
{
    static abstract ClassMeta Class { get; }

    string Value { get; }
}

/// <summary>A generated typed view of one row (<c>VMRecord</c>, …).</summary>
public interface IRecordView<TSelf> where TSelf : IRecordView<TSelf>
{
    static abstract ClassMeta Class { get; }

    static abstract TSelf Wrap(IRowReader source, string reference, IReadOnlyList<object?> values);
}

/// <summary>Typed row access that does not depend on the class: enumeration, existence, deletion.</summary>
public static class RowAccess
{
    /// <summary>Every row of a class as its typed view: <c>snapshot.All&lt;TaskRecord&gt;()</c>.</summary>
    public static IEnumerable<TRecord> All<TRecord>(this IRowReader db) where TRecord : IRecordView<TRecord>
    {
        foreach (var (reference, values) in db.AllRowValues(TRecord.Class))
        {
            yield return TRecord.Wrap(db, reference, values);
        }
    }

    public static bool Exists<TRef>(this IRowReader db, TRef reference) where TRef : IObjectRef =>
        db.TryGetRowValues(TRef.Class, reference.Value, out _);

    /// <exception cref="XenApiException">HANDLE_INVALID when there is no such object.</exception>
    public static void Delete<TRef>(this IRowWriter tx, TRef reference) where TRef : IObjectRef =>
        tx.DeleteRow(TRef.Class, reference.Value);
}
