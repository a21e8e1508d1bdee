# ruff: noqa: RUF001  (Turkish dotless i and the full-width question mark are correct here)
"""Vectorised building blocks for demo strings: ids, digits, and multilingual post texts.

Every function takes a `numpy.random.Generator` and sizes, and returns Arrow arrays built by
template selection over small vocabularies (`take`) and element-wise joins
(`binary_join_element_wise`) — never a Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "LANGS",
    "PII_KINDS",
    "by_kind",
    "digit_strings",
    "hex_strings",
    "int_strings",
    "ipv4_strings",
    "luhn_card_numbers",
    "post_texts",
]

IntArray = npt.NDArray[np.int64]

LANGS: tuple[str, ...] = (
    "en", "es", "de", "fr", "pt", "ja", "hi", "ar", "it", "nl", "pl", "sv", "tr", "ko", "id",
)  # fmt: skip
"""BCP 47 tags of the languages posts are written in."""

PII_KINDS: tuple[str, ...] = (
    "none", "email", "phone", "url", "url_query", "url_user", "handle", "ip", "card",
)  # fmt: skip
"""What the optional personal-data slot of a post holds."""

_PII_SHARES = np.array([0.73, 0.05, 0.04, 0.06, 0.03, 0.02, 0.05, 0.01, 0.01])
_MENTION_SHARE = 0.12
_HASHTAG_SHARE = 0.18

_PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "Just finished my morning run, feeling great",
        "Anyone else watching the match tonight?",
        "New blog post is up, would love your thoughts",
        "Coffee first, then emails",
        "Can't believe how fast this year is going",
        "Looking for recommendations for a good sci-fi book",
        "Our team shipped the release today!",
        "Rainy day in the city, perfect for staying in",
    ),
    "es": (
        "Acabo de terminar mi café de la mañana",
        "¿Alguien más viendo el partido esta noche?",
        "Nuevo artículo en el blog, espero sus comentarios",
        "Qué día tan bonito para pasear",
        "Buscando recomendaciones de libros",
        "Hoy lanzamos la nueva versión",
        "No puedo creer lo rápido que pasa el año",
        "Lluvia en la ciudad, día de quedarse en casa",
    ),
    "de": (
        "Gerade vom Joggen zurück, fühle mich großartig",
        "Schaut noch jemand heute Abend das Spiel?",
        "Neuer Blogbeitrag ist online, freue mich auf Feedback",
        "Erst Kaffee, dann E-Mails",
        "Suche Empfehlungen für ein gutes Buch",
        "Unser Team hat heute das Release veröffentlicht",
        "Regentag in der Stadt, perfekt zum Lesen",
        "Wie schnell dieses Jahr vergeht",
    ),
    "fr": (
        "Je viens de finir mon footing du matin",
        "Quelqu'un d'autre regarde le match ce soir ?",
        "Nouvel article sur le blog, vos avis sont les bienvenus",
        "D'abord un café, ensuite les mails",
        "Je cherche des recommandations de livres",
        "Notre équipe a publié la nouvelle version aujourd'hui",
        "Journée pluvieuse, parfaite pour lire",
        "Cette année passe tellement vite",
    ),
    "pt": (
        "Acabei de voltar da corrida matinal",
        "Alguém mais assistindo ao jogo hoje?",
        "Post novo no blog, quero saber o que acham",
        "Primeiro café, depois e-mails",
        "Procurando indicações de livros",
        "Nosso time lançou a nova versão hoje",
        "Dia de chuva na cidade, perfeito para ficar em casa",
        "Esse ano está passando muito rápido",
    ),
    "ja": (
        "朝のランニング終わった、気持ちいい",
        "今夜の試合見る人いる？",
        "ブログを更新しました、感想お待ちしてます",
        "まずはコーヒー、それからメール",
        "おすすめの本を探しています",
        "今日チームで新しいバージョンをリリースしました",
        "雨の日は家で読書",
        "今年は本当にあっという間",
    ),
    "hi": (
        "अभी सुबह की दौड़ पूरी की, बहुत अच्छा लग रहा है",
        "आज रात मैच कौन देख रहा है?",
        "ब्लॉग पर नई पोस्ट, अपनी राय ज़रूर दें",
        "पहले चाय, फिर ईमेल",
        "अच्छी किताबों के सुझाव चाहिए",
        "हमारी टीम ने आज नया वर्शन रिलीज़ किया",
        "बारिश का दिन, घर पर रहने का मन है",
        "यह साल कितनी जल्दी बीत रहा है",
    ),
    "ar": (
        "انتهيت للتو من الجري الصباحي",
        "هل يشاهد أحد المباراة الليلة؟",
        "تدوينة جديدة على المدونة، أنتظر آراءكم",
        "القهوة أولاً ثم البريد",
        "أبحث عن توصيات لكتب جيدة",
        "أطلق فريقنا الإصدار الجديد اليوم",
        "يوم ممطر في المدينة",
        "هذه السنة تمر بسرعة كبيرة",
    ),
    "it": (
        "Ho appena finito la corsa del mattino",
        "Qualcuno guarda la partita stasera?",
        "Nuovo articolo sul blog, aspetto i vostri commenti",
        "Prima il caffè, poi le email",
        "Cerco consigli su un buon libro",
        "Oggi il nostro team ha rilasciato la nuova versione",
        "Giornata di pioggia in città",
        "Quest'anno sta volando",
    ),
    "nl": (
        "Net terug van mijn ochtendrondje hardlopen",
        "Kijkt er nog iemand vanavond naar de wedstrijd?",
        "Nieuwe blogpost staat online, benieuwd naar jullie mening",
        "Eerst koffie, dan e-mail",
        "Op zoek naar een goed boek",
        "Ons team heeft vandaag de nieuwe versie uitgebracht",
        "Regenachtige dag in de stad",
        "Wat gaat dit jaar snel",
    ),
    "pl": (
        "Właśnie skończyłem poranny bieg",
        "Ktoś jeszcze ogląda dziś mecz?",
        "Nowy wpis na blogu, czekam na opinie",
        "Najpierw kawa, potem maile",
        "Szukam polecenia dobrej książki",
        "Nasz zespół wydał dziś nową wersję",
        "Deszczowy dzień w mieście",
        "Ten rok mija tak szybko",
    ),
    "sv": (
        "Precis hemma från morgonlöpningen",
        "Är det fler som tittar på matchen ikväll?",
        "Nytt blogginlägg ute, säg gärna vad ni tycker",
        "Först kaffe, sedan mejl",
        "Letar efter boktips",
        "Vårt team släppte den nya versionen idag",
        "Regnig dag i stan",
        "Vad fort det här året går",
    ),
    "tr": (
        "Sabah koşumu yeni bitirdim",
        "Bu akşam maçı izleyen var mı?",
        "Blogda yeni yazı var, yorumlarınızı bekliyorum",
        "Önce kahve, sonra e-postalar",
        "İyi bir kitap önerisi arıyorum",
        "Ekibimiz bugün yeni sürümü yayınladı",
        "Şehirde yağmurlu bir gün",
        "Bu yıl çok hızlı geçiyor",
    ),
    "ko": (
        "아침 달리기 끝! 기분 최고",
        "오늘 밤 경기 보는 사람?",
        "블로그에 새 글 올렸어요, 의견 부탁드려요",
        "커피 먼저, 그다음 이메일",
        "좋은 책 추천 받아요",
        "오늘 우리 팀이 새 버전을 출시했어요",
        "비 오는 날엔 집에서 독서",
        "올해는 정말 빨리 지나가네요",
    ),
    "id": (
        "Baru selesai lari pagi",
        "Ada yang nonton pertandingan malam ini?",
        "Tulisan baru di blog, tunggu komentar kalian",
        "Kopi dulu, baru email",
        "Cari rekomendasi buku bagus",
        "Tim kami merilis versi baru hari ini",
        "Hari hujan di kota",
        "Tahun ini cepat sekali berlalu",
    ),
}

# Lead-ins before the personal-data slot, per language: contact, link, ip, card, mention.
_LEADINS: dict[str, tuple[str, str, str, str, str]] = {
    "en": ("reach me at", "more here:", "server is up at", "refund to card", "thanks to"),
    "es": ("escríbeme a", "más info aquí:", "el servidor está en", "reembolso a la tarjeta",
           "gracias a"),
    "de": ("schreibt mir an", "mehr dazu hier:", "Server läuft unter", "Erstattung auf Karte",
           "danke an"),
    "fr": ("écrivez-moi à", "plus d'infos ici :", "le serveur est sur",
           "remboursement sur la carte", "merci à"),
    "pt": ("fale comigo em", "mais aqui:", "o servidor está em", "reembolso no cartão", "valeu"),
    "ja": ("連絡先は", "詳細はこちら:", "サーバーのアドレスは", "返金先のカード", "ありがとう"),
    "hi": ("मुझसे संपर्क करें", "यहाँ और पढ़ें:", "सर्वर का पता", "रिफंड इस कार्ड पर", "धन्यवाद"),
    "ar": ("تواصلوا معي على", "المزيد هنا:", "الخادم على", "استرداد إلى البطاقة", "شكراً لـ"),
    "it": ("scrivetemi a", "altro qui:", "il server è su", "rimborso sulla carta", "grazie a"),
    "nl": ("mail of bel me op", "meer hier:", "server draait op", "terugbetaling naar kaart",
           "dank aan"),
    "pl": ("napisz do mnie", "więcej tutaj:", "serwer działa pod", "zwrot na kartę", "dzięki"),
    "sv": ("nå mig på", "mer här:", "servern finns på", "återbetalning till kort", "tack till"),
    "tr": ("bana ulaşın:", "daha fazlası:", "sunucu adresi", "iade kartı", "teşekkürler"),
    "ko": ("연락처", "자세히 보기:", "서버 주소", "환불 카드", "고마워요"),
    "id": ("hubungi saya di", "selengkapnya:", "server ada di", "refund ke kartu",
           "terima kasih"),
}  # fmt: skip

# Which lead-in (index into a _LEADINS tuple) introduces each PII kind.
_LEADIN_OF_KIND = np.array([0, 0, 0, 1, 1, 1, 4, 2, 3], dtype=np.int64)

_PHONE_CC: dict[str, str] = {
    "en": "+1", "es": "+34", "de": "+49", "fr": "+33", "pt": "+55", "ja": "+81", "hi": "+91",
    "ar": "+966", "it": "+39", "nl": "+31", "pl": "+48", "sv": "+46", "tr": "+90", "ko": "+82",
    "id": "+62",
}  # fmt: skip

_NAMES = (
    "maria", "jose", "anna", "luca", "yuki", "haruto", "priya", "arjun", "fatima", "omar",
    "lukas", "emma", "chloe", "lucas", "joao", "ana", "mehmet", "ayse", "minjun", "jiwoo",
    "budi", "siti", "sven", "astrid", "piotr", "zofia", "daan", "sanne", "giulia", "marco",
    "amira", "youssef", "olivia", "liam", "noah", "sofia", "mateo", "valentina", "hiro",
    "sakura", "rahul", "ananya", "chen", "wei", "kwame", "amara", "ines", "hugo", "lea",
    "felix", "nina", "oscar", "maya", "leo", "ivy", "sam", "alex", "kim", "rio", "nadia",
)  # fmt: skip
_WORDS = (
    "dev", "art", "photos", "runs", "cooks", "news", "fan", "studio", "music", "travels",
    "codes", "design", "books", "lab", "daily", "writes", "films", "garden", "bikes", "tech",
)  # fmt: skip
_MAIL_DOMAINS = (
    "gmail.com", "outlook.com", "yahoo.com", "proton.me", "web.de", "orange.fr", "uol.com.br",
    "yahoo.co.jp", "rediffmail.com", "libero.it", "wp.pl", "naver.com", "example.org",
)  # fmt: skip
_SITES = (
    "news.example.com", "blog.example.org", "github.com", "medium.com", "bbc.co.uk",
    "elpais.com", "spiegel.de", "lemonde.fr", "globo.com", "nhk.or.jp", "ndtv.com",
    "aljazeera.net", "corriere.it", "shop.example.net",
)  # fmt: skip
_SECTIONS = ("tech", "sport", "culture", "world", "science", "travel", "food", "ai", "music")
_SOCIAL = ("social.example", "x.com", "mastodon.social", "bsky.app")
_UTM = ("twitter", "newsletter", "share", "app", "rss")
_HASHTAGS = (
    "monday", "tech", "music", "football", "ai", "books", "travel", "coffee", "photography",
    "news", "running", "opensource",
)  # fmt: skip

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_YT = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8
)


def _bytes_to_strings(chars: npt.NDArray[np.uint8]) -> pa.Array:
    """An (n, width) matrix of ASCII codes as an Arrow string array of width-long strings."""
    n, width = chars.shape
    packed = np.ascontiguousarray(chars).view(f"S{width}").reshape(n)
    return pa.array(packed, type=pa.binary(width)).cast(pa.binary()).cast(pa.string())


def _vocab(words: Sequence[str]) -> pa.Array:
    return pa.array(list(words), type=pa.string())


def _pick(rng: np.random.Generator, words: Sequence[str], n: int) -> pa.Array:
    return _vocab(words).take(pa.array(rng.integers(0, len(words), n)))


def _join(*parts: pa.Array | str) -> pa.Array:
    """Concatenate element-wise (the trailing "" is the separator)."""
    return pc.binary_join_element_wise(*parts, "")


def digit_strings(rng: np.random.Generator, n: int, width: int) -> pa.Array:
    """`n` random strings of `width` decimal digits (leading zeros kept)."""
    return _bytes_to_strings((rng.integers(0, 10, (n, width)) + 48).astype(np.uint8))


def hex_strings(values: npt.NDArray[np.uint64], width: int = 16) -> pa.Array:
    """Lower-case hex of unsigned 64-bit values, zero-padded to `width` (<= 16) digits."""
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    nibbles = (values[:, None] >> shifts[None, :]) & np.uint64(15)
    return _bytes_to_strings(_HEX[nibbles.astype(np.intp)])


def int_strings(values: npt.NDArray[np.int64]) -> pa.Array:
    """Decimal strings of integers."""
    return pc.cast(pa.array(values, type=pa.int64()), pa.string())


def ipv4_strings(octets: npt.NDArray[np.int64]) -> pa.Array:
    """Dotted-quad strings from an (n, 4) matrix of octets."""
    cols = [int_strings(np.ascontiguousarray(octets[:, i])) for i in range(4)]
    return pc.binary_join_element_wise(*cols, ".")


def luhn_card_numbers(rng: np.random.Generator, n: int) -> pa.Array:
    """`n` Luhn-valid 16-digit card numbers (Visa 4… or Mastercard 51-55…), half grouped by 4.

    1. Draw the 15 payload digits; fix the brand prefix.
    2. Double every payload digit whose position from the right of the full number is odd,
       subtract 9 from doubles above 9, sum, and choose the check digit making the sum ≡ 0 (10).
    3. Render as ASCII; half of them get spaces after every four digits.
    """
    payload = rng.integers(0, 10, (n, 15))
    visa = rng.random(n) < 0.6
    payload[:, 0] = np.where(visa, 4, 5)
    payload[:, 1] = np.where(visa, payload[:, 1], rng.integers(1, 6, n))
    doubled = payload.copy()
    doubled[:, 0::2] *= 2  # positions 15, 13, … from the right are the even payload indices
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    check = (10 - doubled.sum(axis=1) % 10) % 10
    digits = np.concatenate([payload, check[:, None]], axis=1) + 48
    spaced = np.full((n, 19), ord(" "), dtype=np.int64)
    for group in range(4):  # four column blocks, not rows
        spaced[:, group * 5 : group * 5 + 4] = digits[:, group * 4 : group * 4 + 4]
    plain = _bytes_to_strings(digits.astype(np.uint8))
    grouped = _bytes_to_strings(spaced.astype(np.uint8))
    return pc.if_else(pa.array(rng.random(n) < 0.5), grouped, plain)


def by_kind(kind: IntArray, parts: Sequence[pa.Array]) -> pa.Array:
    """Assemble one array from per-kind parts: row i takes the next unused value of parts[kind[i]].

    1. `parts[k]` must hold exactly `count(kind == k)` values (in row order).
    2. Concatenating the parts in kind order lines them up with a stable sort of `kind`;
       inverting that permutation gives each row its value.
    """
    counts = np.bincount(kind, minlength=len(parts))
    for k, part in enumerate(parts):
        if len(part) != counts[k]:
            raise ValueError(f"part {k} has {len(part)} values, expected {counts[k]}")
    order = np.argsort(kind, kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(len(kind))
    pieces = pa.concat_arrays([p.cast(pa.string()) for p in parts])
    return pieces.take(pa.array(position))


def _handle_base(rng: np.random.Generator, n: int) -> pa.Array:
    """ASCII handles without the `@`: name, name_word or name + digits."""
    kind = rng.choice(3, size=n, p=[0.3, 0.3, 0.4]).astype(np.int64)
    counts = np.bincount(kind, minlength=3)
    suffix = by_kind(
        kind,
        [
            pa.array([""] * int(counts[0]), type=pa.string()),
            _join("_", _pick(rng, _WORDS, int(counts[1]))),
            digit_strings(rng, int(counts[2]), 3),
        ],
    )
    return _join(_pick(rng, _NAMES, n), suffix)


def _emails(rng: np.random.Generator, n: int) -> pa.Array:
    local = _join(_pick(rng, _NAMES, n), _pick(rng, (".", "_", ""), n), _pick(rng, _WORDS, n))
    return _join(local, digit_strings(rng, n, 2), "@", _pick(rng, _MAIL_DOMAINS, n))


def _phones(rng: np.random.Generator, langs: IntArray) -> pa.Array:
    n = len(langs)
    cc = _vocab([_PHONE_CC[lang] for lang in LANGS]).take(pa.array(langs))
    return _join(
        cc, " ", digit_strings(rng, n, 3), " ", digit_strings(rng, n, 3), " ",
        digit_strings(rng, n, 4),
    )  # fmt: skip


def _urls(rng: np.random.Generator, n: int) -> pa.Array:
    return _join(
        "https://", _pick(rng, _SITES, n), "/", _pick(rng, _SECTIONS, n), "/",
        _pick(rng, _WORDS, n), "-", digit_strings(rng, n, 5),
    )  # fmt: skip


def _urls_with_query(rng: np.random.Generator, n: int) -> pa.Array:
    youtube = rng.random(n) < 0.4
    video = _bytes_to_strings(_YT[rng.integers(0, len(_YT), (n, 11))])
    yt = _join("https://www.youtube.com/watch?v=", video)
    tracked = _join(
        "https://", _pick(rng, _SITES, n), "/", _pick(rng, _SECTIONS, n), "?utm_source=",
        _pick(rng, _UTM, n), "&ref=", _handle_base(rng, n), "&id=", digit_strings(rng, n, 7),
    )  # fmt: skip
    return pc.if_else(pa.array(youtube), yt, tracked)


def _urls_with_user(rng: np.random.Generator, n: int) -> pa.Array:
    profile = _join("https://", _pick(rng, _SOCIAL, n), "/@", _handle_base(rng, n))
    status = _join(
        "https://", _pick(rng, _SOCIAL, n), "/users/", _handle_base(rng, n), "/status/",
        digit_strings(rng, n, 12),
    )  # fmt: skip
    return pc.if_else(pa.array(rng.random(n) < 0.5), profile, status)


def _ips(rng: np.random.Generator, n: int) -> pa.Array:
    octets = np.column_stack(
        [rng.integers(11, 224, n), rng.integers(0, 256, (n, 2)), rng.integers(1, 255, n)]
    )
    return ipv4_strings(octets)


def _flat(groups: Sequence[Sequence[str]]) -> tuple[pa.Array, IntArray, IntArray]:
    """All groups' strings in one array, with each group's offset and size."""
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return _vocab([s for g in groups for s in g]), offsets, sizes


_PHRASE_FLAT, _PHRASE_OFFSETS, _PHRASE_SIZES = _flat([_PHRASES[lang] for lang in LANGS])
_LEADIN_FLAT = _vocab([s for lang in LANGS for s in _LEADINS[lang]])


def post_texts(rng: np.random.Generator, langs: IntArray) -> tuple[pa.Array, IntArray]:
    """Post texts in the given languages (indices into LANGS), and each post's PII kind.

    1. Pick a phrase of the post's language.
    2. With ~12 % probability prefix an `@handle ` mention.
    3. Pick a PII kind (see PII_KINDS; ~27 % of posts have one): email, phone number,
       URL (plain, with a query string, or with a user path), @handle, IPv4 address or a
       Luhn-valid card number; append it after a lead-in in the post's language.
    4. With ~18 % probability append a hashtag.
    """
    n = len(langs)
    phrase = _PHRASE_FLAT.take(
        pa.array(_PHRASE_OFFSETS[langs] + (rng.random(n) * _PHRASE_SIZES[langs]).astype(np.int64))
    )
    has_mention = rng.random(n) < _MENTION_SHARE
    mention = by_kind(
        has_mention.astype(np.int64),
        [
            pa.array([""] * int(n - has_mention.sum()), type=pa.string()),
            _join("@", _handle_base(rng, int(has_mention.sum())), " "),
        ],
    )
    kind = rng.choice(len(PII_KINDS), size=n, p=_PII_SHARES).astype(np.int64)
    counts = [int(c) for c in np.bincount(kind, minlength=len(PII_KINDS))]
    pii = by_kind(
        kind,
        [
            pa.array([""] * counts[0], type=pa.string()),
            _emails(rng, counts[1]),
            _phones(rng, langs[kind == 2]),
            _urls(rng, counts[3]),
            _urls_with_query(rng, counts[4]),
            _urls_with_user(rng, counts[5]),
            _join("@", _handle_base(rng, counts[6])),
            _ips(rng, counts[7]),
            luhn_card_numbers(rng, counts[8]),
        ],
    )
    leadin = _LEADIN_FLAT.take(pa.array(langs * 5 + _LEADIN_OF_KIND[kind]))
    has_pii = pa.array(kind > 0)
    pii_part = pc.if_else(has_pii, _join(" ", leadin, " ", pii), "")
    has_tag = pa.array(rng.random(n) < _HASHTAG_SHARE)
    tag = pc.if_else(has_tag, _join(" #", _pick(rng, _HASHTAGS, n)), "")
    return _join(mention, phrase, pii_part, tag), kind
