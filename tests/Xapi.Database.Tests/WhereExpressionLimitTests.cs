using Xapi.Model;

namespace Xapi.Database.Tests;

/// <summary>Where-expressions come from any client: depth is bounded, long flat runs are not deep.</summary>
public class WhereExpressionLimitTests
{
    private static readonly ClassMeta Vm = ApiSchema.Class("VM");

    private static XapiDatabase OneVm(string name)
    {
        var db = new XapiDatabase();
        db.Write(tx => tx.Create(Vm, new Dictionary<string, object?> { ["name_label"] = name }));
        return db;
    }

    private static int CountMatches(XapiDatabase db, WhereExpression expression)
    {
        var snapshot = db.Snapshot;
        return snapshot.All(Vm).Count(r => expression.Matches(snapshot, r));
    }

    [TestCase("(", ")")]
    [TestCase("not ", "")]
    [TestCase("not (", ")")]
    public void Nesting_up_to_the_limit_parses_and_evaluates(string open, string close)
    {
        var depth = open.Length > 4 ? WhereExpression.MaxDepth / 2 : WhereExpression.MaxDepth;
        var text = string.Concat(Enumerable.Repeat(open, depth)) + "field \"name__label\"=\"a\"" + string.Concat(Enumerable.Repeat(close, depth));
        var expression = WhereExpression.Parse(text);
        var expected = open.StartsWith("not", StringComparison.Ordinal) && depth % 2 == 1 ? 0 : 1;
        Assert.That(CountMatches(OneVm("a"), expression), Is.EqualTo(expected));
    }

    [TestCase("(", ")", 257)]
    [TestCase("not ", "", 257)]
    [TestCase("(", ")", 60_000)]
    [TestCase("not ", "", 70_000)]
    public void Nesting_past_the_limit_is_an_invalid_value_naming_the_limit(string open, string close, int depth)
    {
        var text = string.Concat(Enumerable.Repeat(open, depth)) + "true" + string.Concat(Enumerable.Repeat(close, depth));
        var e = Assert.Throws<XenApiException>(() => WhereExpression.Parse(text))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.Code, Is.EqualTo("INVALID_VALUE"));
            Assert.That(e.Parameters[0], Is.EqualTo("expr"));
            Assert.That(e.Parameters[1], Does.Contain($"nested deeper than {WhereExpression.MaxDepth}"));
        });
    }

    [TestCase("and", 1)]
    [TestCase("or", 1)]
    public void A_flat_run_of_forty_thousand_terms_is_one_level_deep(string keyword, int expected)
    {
        // Left-nested pairs would recurse 40,000 deep when a row is matched.
        var text = string.Join($" {keyword} ", Enumerable.Repeat("field \"name__label\"=\"a\"", 40_000));
        var expression = WhereExpression.Parse(text);
        Assert.That(CountMatches(OneVm("a"), expression), Is.EqualTo(expected));
    }

    [Test]
    public void And_binds_tighter_than_or_and_both_stop_early()
    {
        var db = OneVm("a");
        Assert.Multiple(() =>
        {
            Assert.That(CountMatches(db, WhereExpression.Parse("false and true or true")), Is.EqualTo(1));
            Assert.That(CountMatches(db, WhereExpression.Parse("false and (true or true)")), Is.Zero);
            Assert.That(CountMatches(db, WhereExpression.Parse("true or field \"no_such_field\"=\"1\"")), Is.EqualTo(1), "or stops at the first true term");
            Assert.That(CountMatches(db, WhereExpression.Parse("false and field \"no_such_field\"=\"1\"")), Is.Zero, "and stops at the first false term");
        });
    }
}
