"""Deterministic generator of a realistic help-desk mail corpus for benchmarks.

The corpus imitates what a small organisation's help desk receives: new
requests from a few hundred requesters (English and Finnish), and replies
that thread onto earlier requests purely through ``In-Reply-To`` and
``References`` (no ``[#123]`` subject tags).  Replies point at an
acknowledgement Message-ID that the generator invents for the help desk
(``<ack-...@helpdesk.<helpdesk domain>>``) and that the daemon never saw,
exactly like real clients replying to an auto-acknowledgement.

Everything is driven by a single ``random.Random(seed)``: the same arguments
always produce byte-identical messages.

Usage::

    python bench/corpus.py --n 2000 --seed 1 --mbox out.mbox
    python bench/corpus.py --n 2000 --seed 1 --maildir out-maildir

Messages are serialised by hand (not via ``email.generator``) for speed and
full control over charsets and transfer encodings; every message parses with
``email.message_from_bytes`` without defects.  Bodies are UTF-8 or ISO-8859-1,
quoted-printable, base64 or 8bit; some are HTML-only or multipart/alternative,
some carry one base64 attachment (RFC 2231 file names when non-ASCII).

``write_mbox`` writes mboxrd (``>From `` quoting, LF line endings as is
customary for mbox files); ``write_maildir`` writes each message's raw CRLF
bytes unchanged into ``new/`` with lexically sortable names, so sorting the
file names reproduces arrival order.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import html
import os
import random
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.charset import BASE64, Charset
from email.header import Header
from email.utils import format_datetime, formataddr, parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

__all__ = ["CorpusMessage", "generate", "main", "write_maildir", "write_mbox"]


@dataclass(frozen=True)
class CorpusMessage:
    """One generated message, in arrival order."""

    raw: bytes  # the full RFC 5322 message, CRLF line endings
    thread: int  # index of the thread (= the ticket it must end up on)
    is_reply: bool  # True when this message must thread onto an existing thread
    sender: str  # envelope sender address
    message_id: str  # "<...>" or "" when absent


# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------

# fmt: off

_EN_FIRST = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael",
    "Linda", "David", "Elizabeth", "William", "Susan", "Richard", "Sarah",
    "Thomas", "Karen", "Daniel", "Emily", "Mark", "Laura", "Paul", "Rachel",
    "Steven", "Anna", "Kevin", "Helen", "Brian", "Emma", "George", "Olivia",
)
_EN_LAST = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis",
    "Wilson", "Taylor", "Anderson", "Thomas", "Moore", "Martin", "Jackson",
    "White", "Harris", "Clark", "Lewis", "Walker", "Hall", "Young", "King",
    "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Carter",
    "Mitchell", "O'Brien",
)
_FI_FIRST = (
    "Matti", "Juha", "Mikko", "Timo", "Kari", "Jari", "Antti", "Jukka",
    "Pekka", "Heikki", "Ville", "Sami", "Janne", "Tuomas", "Jyrki", "Väinö",
    "Yrjö", "Kyösti", "Päivi", "Anne", "Tiina", "Sari", "Minna", "Leena",
    "Marja", "Hanna", "Kaisa", "Satu", "Riitta", "Eeva", "Johanna", "Sanna",
    "Jaana", "Säde", "Hillevi", "Tuula",
)
_FI_LAST = (
    "Virtanen", "Korhonen", "Mäkinen", "Nieminen", "Mäkelä", "Hämäläinen",
    "Laine", "Heikkinen", "Koskinen", "Järvinen", "Lehtonen", "Lehtinen",
    "Saarinen", "Salminen", "Heinonen", "Niemi", "Heikkilä", "Kinnunen",
    "Salonen", "Turunen", "Salo", "Laitinen", "Tuominen", "Rantanen",
    "Karjalainen", "Jokinen", "Mattila", "Savolainen", "Lahtinen", "Ahonen",
    "Kärkkäinen", "Jääskeläinen", "Pöllänen", "Ylönen", "Söderström",
    "Lähteenmäki",
)

# domain -> (company name, probability that a requester there is Finnish)
_DOMAINS: tuple[tuple[str, str, float], ...] = (
    ("example.org", "Example Foundation", 0.25),
    ("example.net", "Example Networks Ltd", 0.3),
    ("yritys.fi", "Yritys Oy", 0.9),
    ("firma.fi", "Firma Ab Oy", 0.85),
    ("corp.example", "Corp Example Inc.", 0.4),
)
_DOMAIN_WEIGHTS = (18, 14, 30, 22, 16)

_EN_TITLES = (
    "Sales Manager", "Accountant", "Project Coordinator", "HR Specialist",
    "Software Developer", "Office Manager", "Marketing Assistant",
    "Customer Service Representative", "Controller", "Warehouse Supervisor",
)
_FI_TITLES = (
    "Myyntipäällikkö", "Kirjanpitäjä", "Projektikoordinaattori",
    "HR-asiantuntija", "Ohjelmistokehittäjä", "Toimistopäällikkö",
    "Markkinointiassistentti", "Asiakaspalvelusihteeri", "Controller",
    "Varastoesimies", "Palvelupäällikkö",
)

# A topic: English subjects, Finnish subjects, English details, Finnish details.
_Topic = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]
_TOPICS: tuple[_Topic, ...] = (
    (
        ("Printer on 3rd floor not working", "Printer jammed again",
         "Cannot print to the network printer"),
        ("Tulostin ei toimi (3. krs)", "Tulostin jumissa taas",
         "Verkkotulostimelle ei pysty tulostamaan"),
        ("The printer next to the meeting room shows a paper jam error even "
         "though there is no paper stuck anywhere.",
         "I have tried turning it off and on again but the display still "
         "says 'Error 50.4'.",
         "Print jobs just sit in the queue with the status 'Printing' and "
         "nothing comes out.",
         "Several people on our floor have the same problem since this "
         "morning.",
         "We need to print contracts for a customer meeting this afternoon."),
        ("Neuvotteluhuoneen vieressä oleva tulostin ilmoittaa paperitukoksesta, "
         "vaikka paperia ei ole jumissa missään.",
         "Kokeilin sammuttaa ja käynnistää sen uudelleen, mutta näytössä lukee "
         "edelleen 'Error 50.4'.",
         "Tulostustyöt jäävät jonoon tilaan 'Tulostetaan' eikä mitään tule ulos.",
         "Usealla kerroksemme työntekijällä on sama ongelma tästä aamusta asti.",
         "Meidän pitäisi tulostaa sopimukset asiakastapaamiseen iltapäivällä."),
    ),
    (
        ("VPN disconnects every few minutes", "Cannot connect to VPN from home",
         "VPN error 809"),
        ("VPN-yhteys katkeilee", "VPN ei yhdistä kotoa",
         "VPN-virhe 809"),
        ("When working from home the VPN connection drops every five to ten "
         "minutes.",
         "The client says 'The network connection between your computer and "
         "the VPN server could not be established'.",
         "My home internet works fine otherwise, I can browse and stream "
         "without problems.",
         "This started after the latest Windows update was installed on my "
         "laptop.",
         "I cannot reach the file shares or the intranet without the VPN."),
        ("Etätöissä VPN-yhteys katkeaa viiden-kymmenen minuutin välein.",
         "Ohjelma sanoo, että verkkoyhteyttä VPN-palvelimeen ei voitu "
         "muodostaa.",
         "Kotinetti toimii muuten normaalisti, selaaminen ja videot pyörivät "
         "ongelmitta.",
         "Ongelma alkoi, kun kannettavaan asentui viimeisin Windows-päivitys.",
         "En pääse verkkolevyille enkä intraan ilman VPN:ää."),
    ),
    (
        ("Password reset request", "Password expired",
         "Locked out of my account"),
        ("Salasana vanhentunut", "Salasanan nollauspyyntö",
         "Tunnus lukittu"),
        ("My password expired over the weekend and the self-service portal "
         "does not accept my phone number.",
         "I entered the wrong password too many times and now my account is "
         "locked.",
         "Could you please reset my password so that I can log in again?",
         "I can still read email on my phone but cannot log in to the "
         "workstation.",
         "The reset link in the portal gives an error page."),
        ("Salasanani vanheni viikonlopun aikana, eikä itsepalveluportaali "
         "hyväksy puhelinnumeroani.",
         "Syötin väärän salasanan liian monta kertaa ja nyt tunnukseni on "
         "lukittu.",
         "Voisitteko nollata salasanani, jotta pääsen taas kirjautumaan?",
         "Sähköpostit näkyvät vielä puhelimessa, mutta työasemalle en pääse "
         "kirjautumaan.",
         "Portaalin nollauslinkki antaa virhesivun."),
    ),
    (
        ("New laptop request", "Laptop for new employee",
         "Request: replacement laptop"),
        ("Uusi kannettava uudelle työntekijälle", "Kannettavan tilaus",
         "Pyyntö: vaihtokone"),
        ("We have a new team member starting on Monday and they will need a "
         "laptop with the standard software.",
         "My current laptop is five years old and the battery lasts less than "
         "an hour.",
         "Our cost centre is 4410 and my manager has approved the purchase.",
         "A 14-inch model would be best since I travel a lot.",
         "Please also include a docking station and a headset if possible."),
        ("Meille aloittaa maanantaina uusi työntekijä, joka tarvitsee "
         "kannettavan vakio-ohjelmistoilla.",
         "Nykyinen kannettavani on viisi vuotta vanha ja akku kestää alle "
         "tunnin.",
         "Kustannuspaikkamme on 4410 ja esimieheni on hyväksynyt hankinnan.",
         "14 tuuman malli olisi paras, koska matkustan paljon.",
         "Mukaan myös telakka ja kuulokkeet, jos mahdollista."),
    ),
    (
        ("Outlook keeps crashing", "Outlook not responding",
         "Outlook crashes when opening attachments"),
        ("Outlook kaatuu", "Outlook ei vastaa",
         "Outlook kaatuu liitteitä avatessa"),
        ("Outlook closes itself every time I try to open a PDF attachment.",
         "The window freezes and shows 'Not responding' for several minutes.",
         "I already tried starting it in safe mode but the problem is the "
         "same.",
         "My mailbox is almost full, could that be related?",
         "Colleagues using the web version do not have this problem."),
        ("Outlook sulkeutuu itsestään aina kun yritän avata PDF-liitteen.",
         "Ikkuna jumittuu ja näyttää 'Ei vastaa' useita minuutteja.",
         "Kokeilin jo käynnistää sen vikasietotilassa, mutta ongelma on sama.",
         "Postilaatikkoni on melkein täynnä, voisiko se liittyä asiaan?",
         "Selainversiota käyttävillä kollegoilla ei ole tätä ongelmaa."),
    ),
    (
        ("New user account needed", "Account for summer trainee",
         "Access for new employee"),
        ("Pyytäisin uutta käyttäjätunnusta", "Tunnukset kesätyöntekijälle",
         "Käyttöoikeudet uudelle työntekijälle"),
        ("Please create a user account for our new colleague who starts next "
         "week.",
         "They will need access to email, Teams and the shared project folder.",
         "The contract is valid until the end of August.",
         "Their manager will be me and the department is Finance.",
         "Could the account be ready by Friday so we can test the login?"),
        ("Pyytäisin uutta käyttäjätunnusta ensi viikolla aloittavalle "
         "kollegallemme.",
         "Hän tarvitsee pääsyn sähköpostiin, Teamsiin ja projektin yhteiseen "
         "kansioon.",
         "Työsopimus on voimassa elokuun loppuun.",
         "Esimiehenä toimin minä ja osasto on taloushallinto.",
         "Olisiko tunnus mahdollista saada valmiiksi perjantaihin mennessä?"),
    ),
    (
        ("Teams does not start", "No sound in Teams meetings",
         "Teams camera not detected"),
        ("Teams ei käynnisty", "Teams-palavereissa ei kuulu ääntä",
         "Teams ei tunnista kameraa"),
        ("Teams shows a white window and then closes without any message.",
         "Other participants cannot hear me although the headset works in "
         "other programs.",
         "The camera light turns on but the video stays black.",
         "I have a customer meeting at two o'clock, so this is quite urgent.",
         "Reinstalling the application did not help."),
        ("Teams näyttää valkoisen ikkunan ja sulkeutuu ilman ilmoitusta.",
         "Muut osallistujat eivät kuule minua, vaikka kuulokkeet toimivat "
         "muissa ohjelmissa.",
         "Kameran valo syttyy, mutta kuva pysyy mustana.",
         "Minulla on asiakaspalaveri kello kaksi, joten asia on aika "
         "kiireellinen.",
         "Sovelluksen uudelleenasennus ei auttanut."),
    ),
    (
        ("Email not syncing to phone", "Mobile mail setup",
         "Calendar missing on phone"),
        ("Sähköposti ei synkronoidu puhelimeen", "Työposti uuteen puhelimeen",
         "Kalenteri ei näy puhelimessa"),
        ("I got a new phone and the work email app asks for a certificate.",
         "New messages show up on the phone only after several hours.",
         "The calendar entries from last week have disappeared from the phone.",
         "I am using an iPhone with the latest iOS version.",
         "Could you send me instructions for setting up the mail app?"),
        ("Sain uuden puhelimen ja työsähköpostisovellus kysyy varmennetta.",
         "Uudet viestit näkyvät puhelimessa vasta usean tunnin päästä.",
         "Viime viikon kalenterimerkinnät ovat kadonneet puhelimesta.",
         "Käytössäni on Android-puhelin uusimmalla päivityksellä.",
         "Voisitteko lähettää ohjeet postisovelluksen käyttöönottoon?"),
    ),
    (
        ("Access to shared folder", "Permission denied on network drive",
         "Need access to Finance share"),
        ("Käyttöoikeus jaettuun kansioon", "Ei oikeuksia verkkolevylle",
         "Pääsy taloushallinnon kansioon"),
        ("I need read and write access to the Finance share (S:).",
         "When I open the project folder I get 'Access denied'.",
         "My manager has approved this, you can contact her if needed.",
         "I had access before but it seems to have disappeared after the "
         "reorganisation.",
         "A colleague from the same team can open the folder without problems."),
        ("Tarvitsisin luku- ja kirjoitusoikeudet talouden verkkolevylle (S:).",
         "Kun avaan projektikansion, tulee ilmoitus 'Käyttö estetty'.",
         "Esimieheni on hyväksynyt tämän, häneen voi olla yhteydessä.",
         "Minulla oli oikeudet aiemmin, mutta ne näyttävät kadonneen "
         "organisaatiomuutoksen jälkeen.",
         "Saman tiimin kollega pääsee kansioon ongelmitta."),
    ),
    (
        ("Monitor flickering", "Second screen not detected",
         "Docking station problem"),
        ("Näytön vaihto", "Toinen näyttö ei toimi",
         "Telakka ei tunnista näyttöjä"),
        ("My external monitor flickers and goes black every few seconds.",
         "The laptop does not detect the second screen when connected to the "
         "dock.",
         "I tried another cable from the meeting room, same result.",
         "The monitor is the older 24-inch model on desk 3.14.",
         "Working with only the laptop screen is very slow for my spreadsheet "
         "work."),
        ("Ulkoinen näyttöni välkkyy ja pimenee muutaman sekunnin välein.",
         "Kannettava ei tunnista toista näyttöä telakkaan kytkettynä.",
         "Kokeilin neuvotteluhuoneen kaapelia, sama tulos.",
         "Näyttö on vanhempi 24-tuumainen malli työpisteessä 3.14.",
         "Pelkällä kannettavan näytöllä taulukkolaskenta on todella hidasta."),
    ),
    (
        ("Software installation request", "Adobe Acrobat license expired",
         "Need Visio installed"),
        ("Ohjelmiston asennuspyyntö", "Lisenssi loppunut: Adobe Acrobat",
         "Visio-asennus"),
        ("Could you install Visio on my laptop? I need it for process "
         "diagrams.",
         "Acrobat says that my license has expired and asks me to sign in.",
         "The software centre shows the application but the installation "
         "fails with code 0x87D00607.",
         "The license can be charged to project 22-118.",
         "I need this before the audit next week."),
        ("Voisitteko asentaa Vision kannettavaani? Tarvitsen sitä "
         "prosessikaavioihin.",
         "Acrobat ilmoittaa lisenssin vanhentuneen ja pyytää kirjautumaan.",
         "Sovelluskeskus näyttää ohjelman, mutta asennus epäonnistuu koodilla "
         "0x87D00607.",
         "Lisenssin voi laskuttaa projektilta 22-118.",
         "Tarvitsisin tämän ennen ensi viikon auditointia."),
    ),
    (
        ("Wi-Fi not working in meeting room", "Guest Wi-Fi password",
         "Slow network in the office"),
        ("Langaton verkko ei toimi neuvotteluhuoneessa", "Vierasverkon salasana",
         "Verkko hidas toimistolla"),
        ("The wireless network in meeting room Aurora keeps disconnecting.",
         "We have visitors tomorrow and need the guest network password.",
         "Downloading files from the intranet takes minutes today.",
         "Wired connection at my desk works normally.",
         "This affects everyone on the second floor."),
        ("Neuvotteluhuone Auroran langaton verkko katkeilee jatkuvasti.",
         "Meille tulee huomenna vieraita ja tarvitsemme vierasverkon "
         "salasanan.",
         "Tiedostojen lataaminen intrasta kestää tänään minuutteja.",
         "Työpisteen kiinteä yhteys toimii normaalisti.",
         "Tämä koskee kaikkia toisen kerroksen työntekijöitä."),
    ),
)

_EN_GREETINGS = ("Hi,", "Hello,", "Hi there,", "Good morning,", "Dear help desk,")
_FI_GREETINGS = ("Hei,", "Moi,", "Hei tuki,", "Hyvää huomenta,", "Terve,")
_EN_CLOSINGS = ("Thanks,", "Thank you,", "Best regards,", "Kind regards,", "Cheers,")
_FI_CLOSINGS = ("Kiitos,", "Kiitos etukäteen,", "Terveisin,", "Ystävällisin terveisin,", "T.")
_EN_EXTRA = (
    "From what I can tell the problem started yesterday afternoon.",
    "Please let me know if you need any more information.",
    "I am available at my desk all day today.",
    "My computer name is on the sticker on the back of the laptop.",
    "This is blocking my work, so I would appreciate a quick fix.",
    "I am working remotely this week.",
)
_FI_EXTRA = (
    "Kertokaa, jos tarvitsette lisätietoja.",
    "Olen tänään koko päivän työpisteelläni.",
    "Koneen nimi on tarrassa kannettavan pohjassa.",
    "Tämä estää työntekoni, joten nopea apu olisi tervetullutta.",
    "Olen tämän viikon etätöissä.",
    "Ongelma alkoi eilen iltapäivällä.",
)
_EN_REPLY = (
    "Thanks, that worked!",
    "I tried restarting as suggested but the problem persists.",
    "Any update on this? It is still not working.",
    "The error came back this morning.",
    "Could someone call me about this? My number is in the signature.",
    "I am out of the office tomorrow, but a colleague can help with testing.",
    "It works now, you can close the ticket.",
    "Here is some more information about the issue.",
)
_FI_REPLY = (
    "Kiitos, nyt toimii!",
    "Kokeilin uudelleenkäynnistystä, mutta ongelma jatkuu.",
    "Onko tähän tullut mitään päivitystä? Vika on edelleen olemassa.",
    "Virhe palasi tänä aamuna.",
    "Voisiko joku soittaa minulle? Numeroni on allekirjoituksessa.",
    "Olen huomenna poissa, mutta kollega voi auttaa testaamisessa.",
    "Nyt toimii, tiketin voi sulkea.",
    "Tässä vielä lisätietoja asiasta.",
)
_EN_COLLEAGUE = "I am replying on behalf of {name}, who is out of the office today."
_FI_COLLEAGUE = "Vastaan {name}n puolesta, hän on tänään poissa."
# attachment kind -> (English sentences, Finnish sentences)
_ATTACHED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pdf": (("Please find the signed form attached.", "The approval is attached as a PDF."),
            ("Liitteenä allekirjoitettu lomake.", "Hyväksyntä liitteenä PDF-muodossa.")),
    "png": (("I attached a screenshot of the error.", "See the attached screenshot."),
            ("Liitteenä kuvakaappaus virheilmoituksesta.", "Kuvakaappaus liitteenä.")),
    "log": (("The log file is attached.", "I attached the log from this morning."),
            ("Lokitiedosto liitteenä.", "Liitin mukaan aamun lokitiedoston.")),
    "zip": (("I zipped the files and attached them.", "The exported settings are attached."),
            ("Pakkasin tiedostot liitteeksi.", "Asetukset liitteenä pakattuna.")),
}
_EN_SUFFIX = ("", "", "", "", " - urgent", "!", " (again)", " - please help")
_FI_SUFFIX = ("", "", "", "", " - kiireellinen", "!", " (taas)", ", apua")

_EN_ACK = (
    "Hello {first},\n\n"
    "Thank you for contacting the IT help desk. We have received your request "
    "\"{subject}\" and will get back to you as soon as possible.\n\n"
    "If you have more information to add, simply reply to this message.\n\n"
    "Best regards,\nIT Help Desk"
)
_FI_ACK = (
    "Hei {first},\n\n"
    "Kiitos yhteydenotostasi IT-tukeen. Olemme vastaanottaneet pyyntösi "
    "\"{subject}\" ja palaamme asiaan mahdollisimman pian.\n\n"
    "Jos haluat lisätä tietoja, vastaa tähän viestiin.\n\n"
    "Ystävällisin terveisin,\nIT-tuki"
)

_ATTACH_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind -> (English names, Finnish names)
    "pdf": (("invoice_2024-001.pdf", "Approval form.pdf", "error_report.pdf",
             "quote_laptop.pdf"),
            ("Käyttöoikeushakemus.pdf", "Hyväksyntä esimieheltä.pdf",
             "tarjous_kannettava.pdf", "lasku 2024-001.pdf")),
    "png": (("screenshot.png", "Capture.PNG", "image001.png", "error.png"),
            ("näyttökuva.png", "virheilmoitus.png", "Kuvakaappaus 2024-01-08.png",
             "image001.png")),
    "log": (("error.log", "vpn_client.log", "install_log.txt", "outlook.log"),
            ("virheloki.log", "lokitiedosto_työasema.log", "asennusloki.txt",
             "vpn-yhteys.log")),
    "zip": (("logs.zip", "printer_config.zip", "diagnostics.zip"),
            ("lokit.zip", "tulostimen_asetukset.zip", "diagnostiikka ä-ö.zip")),
}
_ATTACH_KINDS = ("pdf", "png", "log", "zip")
_ATTACH_WEIGHTS = (30, 35, 20, 15)
_ATTACH_TYPES = {
    "pdf": ("application", "pdf"),
    "png": ("image", "png"),
    "log": ("text", "plain"),
    "zip": ("application", "zip"),
}
_LOG_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
_LOG_MESSAGES = (
    "Connection to vpn.example.com timed out",
    "Retrying request (attempt {n})",
    "Tunnel established, assigned address 10.20.{n}.17",
    "Authentication failed for user, code 0x800704cf",
    "Spooler service restarted",
    "Sync completed in {n} ms",
    "Certificate validation failed: unable to get local issuer",
    "Mailbox size {n} MB exceeds warning threshold",
)

_CLIENTS = ("outlook", "thunderbird", "apple", "gmail", "other")
_CLIENT_WEIGHTS = (45, 20, 12, 13, 10)
_FI_WEEKDAYS = ("ma", "ti", "ke", "to", "pe", "la", "su")
_EN_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
              "Oct", "Nov", "Dec")

_HELSINKI = timezone(timedelta(hours=2))
_TZS = (
    timezone(timedelta(hours=2)),
    timezone(timedelta(hours=1)),
    UTC,
    timezone(timedelta(hours=-5)),
)
_START = datetime(2024, 1, 8, 6, 0, tzinfo=UTC)  # Mon 08:00 in Helsinki
_ASCII_FOLD = str.maketrans({"ä": "a", "ö": "o", "å": "a", "Ä": "A", "Ö": "O",
                             "Å": "A", "'": ""})
_HEX = "0123456789abcdef"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

# fmt: on

# Target proportions.
_P_REPLY = 0.40
_P_REPLY_TO_REPLY = 0.25
_P_COLLEAGUE = 0.12
_P_NO_MSGID = 0.01
_P_ATTACH = 0.15
_P_HTML_ONLY = 0.10
_P_ALTERNATIVE = 0.25


# --------------------------------------------------------------------------
# Internal model
# --------------------------------------------------------------------------


@dataclass
class _Person:
    first: str
    last: str
    lang: str  # "en", "fi" or "sv" (Swedish-speaking Finn: writes Finnish, "SV:" prefix)
    domain: str
    company: str
    address: str
    display: str
    client: str
    name_charset: str
    tz: timezone
    title: str
    phone: str

    @property
    def finnish(self) -> bool:
        return self.lang != "en"


@dataclass
class _Sent:
    message_id: str
    subject: str
    person_display: str
    address: str
    date: datetime
    text: str


@dataclass
class _Thread:
    index: int
    requester: _Person
    subject: str
    orig_id: str
    ack_id: str
    ack: _Sent
    replies: list[_Sent] = field(default_factory=list)


@dataclass
class _Body:
    greeting: str
    paragraphs: list[str]
    closing: str
    first: str
    signature: list[str]
    quote_header: str = ""
    quoted: str = ""


def _hex(rng: random.Random, k: int) -> str:
    return "".join(rng.choices(_HEX, k=k))


def _alnum(rng: random.Random, k: int) -> str:
    return "".join(rng.choices(_ALNUM, k=k))


def _make_people(rng: random.Random, count: int) -> list[_Person]:
    people: list[_Person] = []
    used: set[str] = set()
    for _ in range(max(1, count)):
        domain, company, p_fi = rng.choices(_DOMAINS, weights=_DOMAIN_WEIGHTS)[0]
        finnish_name = rng.random() < p_fi
        if finnish_name:
            first, last = rng.choice(_FI_FIRST), rng.choice(_FI_LAST)
            lang = "fi" if rng.random() < 0.85 else "en"
            if lang == "fi" and domain.endswith(".fi") and rng.random() < 0.12:
                lang = "sv"
        else:
            first, last = rng.choice(_EN_FIRST), rng.choice(_EN_LAST)
            lang = "en" if rng.random() < 0.9 else "fi"
        base = f"{first}.{last}".lower().translate(_ASCII_FOLD)
        local, k = base, 1
        while f"{local}@{domain}" in used:
            k += 1
            local = f"{base}{k}"
        address = f"{local}@{domain}"
        used.add(address)
        style = rng.random()
        if domain.endswith(".fi") and style < 0.35:
            display = f"{last} {first}"
        elif style < 0.5:
            display = f"{last}, {first}"
        else:
            display = f"{first} {last}"
        client = rng.choices(_CLIENTS, weights=_CLIENT_WEIGHTS)[0]
        tz = _TZS[0] if domain.endswith(".fi") or lang != "en" else rng.choice(_TZS)
        titles = _EN_TITLES if lang == "en" else _FI_TITLES
        if lang != "en" or domain.endswith(".fi"):
            phone = (
                f"+358 {rng.choice(('40', '44', '50', '9'))} "
                f"{rng.randint(100, 999)} {rng.randint(1000, 9999)}"
            )
        else:  # numbers reserved for fiction (Ofcom / NANP 555-01xx)
            phone = rng.choice(
                (
                    f"+44 20 7946 0{rng.randint(0, 999):03d}",
                    f"+1 202 555 01{rng.randint(0, 99):02d}",
                )
            )
        people.append(
            _Person(
                first=first,
                last=last,
                lang=lang,
                domain=domain,
                company=company,
                address=address,
                display=display,
                client=client,
                name_charset=rng.choice(("utf-8", "utf-8", "iso-8859-1")),
                tz=tz,
                title=rng.choice(titles),
                phone=phone,
            )
        )
    return people


class _Clock:
    """Monotonic arrival clock: office hours in Helsinki, weekdays only."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = _START

    def advance(self) -> datetime:
        self.now += timedelta(seconds=20 + int(self.rng.expovariate(1 / 240)))
        local = self.now.astimezone(_HELSINKI)
        if local.hour >= 17:
            nxt = (local + timedelta(days=1)).replace(hour=7, minute=30, second=0)
            while nxt.weekday() >= 5:
                nxt += timedelta(days=1)
            self.now = nxt.astimezone(UTC) + timedelta(seconds=self.rng.randint(0, 3600))
        return self.now


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _wrap(text: str) -> tuple[str, ...]:
    return tuple(textwrap.wrap(text, 72, break_long_words=False, break_on_hyphens=False)) or ("",)


def _render_text(body: _Body) -> str:
    lines: list[str] = [body.greeting, ""]
    for par in body.paragraphs:
        lines.extend(_wrap(par))
        lines.append("")
    lines.append(body.closing)
    lines.append(body.first)
    lines.append("")
    lines.append("-- ")
    lines.extend(body.signature)
    if body.quote_header:
        lines.append("")
        lines.extend(_wrap(body.quote_header))
        for q in body.quoted.split("\n"):
            lines.append(f"> {q}" if q and not q.startswith(">") else f">{q}")
    return "\n".join(lines) + "\n"


def _render_html(body: _Body, charset: str, outlook: bool, finnish: bool) -> str:
    esc = html.escape
    p_open = '<p class="MsoNormal">' if outlook else "<p>"
    out = [
        "<html>",
        "<head>",
        f'<meta http-equiv="Content-Type" content="text/html; charset={charset}">',
    ]
    if outlook:
        out += [
            '<meta name="Generator" content="Microsoft Word 15 (filtered medium)">',
            "<style><!--",
            "p.MsoNormal, li.MsoNormal, div.MsoNormal",
            '\t{margin:0cm; font-size:11.0pt; font-family:"Calibri",sans-serif;}',
            "--></style>",
        ]
    lang = "FI" if finnish else "EN-US"
    out.append("</head>")
    out.append(f'<body lang="{lang}" style="word-wrap:break-word">' if outlook else "<body>")
    out.append(f"{p_open}{esc(body.greeting)}</p>")
    for par in body.paragraphs:
        out.append(p_open)
        out.extend(esc(line) for line in _wrap(par))
        out.append("</p>")
    out.append(f"{p_open}{esc(body.closing)}<br>")
    out.append(f"{esc(body.first)}</p>")
    out.append('<div class="signature" style="color:#555555">')
    out.extend(f"{esc(line)}<br>" for line in body.signature)
    out.append("</div>")
    if body.quote_header:
        out.append("<div>")
        out.extend(esc(line) for line in _wrap(body.quote_header))
        out.append("</div>")
        out.append(
            '<blockquote type="cite" style="margin:0 0 0 .8ex;'
            'border-left:1px #ccc solid;padding-left:1ex">'
        )
        out.extend(f"{esc(q)}<br>" for q in body.quoted.split("\n"))
        out.append("</blockquote>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _quote_header(
    rng: random.Random, replier: _Person, finnish: bool, who: str, addr: str, when: datetime
) -> str:
    t = when.astimezone(replier.tz)
    lang = "fi" if finnish else "en"
    client = replier.client
    hm = f"{t.hour}.{t.minute:02d}"
    if lang != "en":
        day = f"{_FI_WEEKDAYS[t.weekday()]} {t.day}.{t.month}.{t.year} klo {hm}"
        if rng.random() < 0.5:
            return f"{who} <{addr}> kirjoitti {day}:"
        return f"{day} {who} (<{addr}>) kirjoitti:"
    if client == "thunderbird":
        return f"On {t.day:02d}/{t.month:02d}/{t.year} {t.hour:02d}:{t.minute:02d}, {who} wrote:"
    return (
        f"On {_EN_WEEKDAYS[t.weekday()]}, {t.day} {_EN_MONTHS[t.month - 1]} {t.year} "
        f"at {t.hour:02d}:{t.minute:02d}, {who} <{addr}> wrote:"
    )


def _message_id(rng: random.Random, person: _Person, when: datetime, seq: int) -> str:
    c = person.client
    d = person.domain
    if c == "outlook":
        return (
            f"<{rng.choice(('HE1P', 'AM0P', 'DB9P', 'GV1P'))}R{rng.randint(1, 9):02d}"
            f"MB{rng.randint(1000, 9999)}{_hex(rng, 16).upper()}{seq:05X}@{d}>"
        )
    if c == "thunderbird":
        h = _hex(rng, 32)
        return f"<{h[:8]}-{h[8:12]}-4{h[13:16]}-{rng.choice('89ab')}{h[17:20]}-{h[20:]}@{d}>"
    if c == "apple":
        h = _hex(rng, 32).upper()
        return f"<{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}@{d}>"
    if c == "gmail":
        return f"<CA{_alnum(rng, 12)}_{_alnum(rng, 24)}-{seq}@{d}>"
    return f"<{int(when.timestamp())}.{seq}.{_hex(rng, 12)}@{d}>"


def _mailer_header(rng: random.Random, client: str) -> str:
    if rng.random() < 0.45:
        return ""
    if client == "outlook":
        return "X-Mailer: Microsoft Outlook 16.0\r\n"
    if client == "thunderbird":
        ver = rng.choice(("115.6.0", "115.7.0", "115.8.1"))
        return (
            f"User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0)\r\n"
            f" Gecko/20100101 Thunderbird/{ver}\r\n"
        )
    if client == "apple":
        return f"X-Mailer: Apple Mail (2.{rng.choice(('3731.700.6', '3774.400.31'))})\r\n"
    return ""  # Gmail and web mailers do not announce themselves


def _received(
    rng: random.Random, person: _Person, when: datetime, hd_domain: str, helpdesk: str
) -> str:
    hops = rng.randint(1, 3)
    t = when
    chain: list[str] = []
    for hop in range(hops):
        t += timedelta(seconds=rng.randint(0, 5))  # < min arrival gap
        stamp = format_datetime(t.astimezone(_HELSINKI))
        if hop == hops - 1:
            host = f"mail{rng.randint(1, 4)}.{person.domain}"
            ip = f"{rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{rng.randint(1, 254)}"
            chain.append(
                f"Received: from {host} ({host} [{ip}])\r\n"
                f"\tby mx{rng.randint(1, 2)}.{hd_domain} (Postfix) with ESMTPS id "
                f"{_hex(rng, 11).upper()}\r\n\tfor <{helpdesk}>; {stamp}\r\n"
            )
        elif hop == 0:
            chain.append(
                f"Received: from [10.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                f"{rng.randint(1, 254)}] (unknown [10.{rng.randint(0, 255)}.0.1])\r\n"
                f"\tby smtp.{person.domain} with ESMTPSA id {_hex(rng, 8)};\r\n\t{stamp}\r\n"
            )
        else:
            chain.append(
                f"Received: from smtp.{person.domain} (localhost [127.0.0.1])\r\n"
                f"\tby relay.{person.domain} (Postfix) with ESMTP id "
                f"{_hex(rng, 10).upper()};\r\n\t{stamp}\r\n"
            )
    return "".join(reversed(chain))  # newest first, as MTAs prepend


def _fold_ids(name: str, ids: Sequence[str]) -> str:
    line = f"{name}:"
    out: list[str] = []
    for mid in ids:
        if len(line) + 1 + len(mid) > 78 and line != f"{name}:":
            out.append(line)
            line = f" {mid}"
        else:
            line += f" {mid}"
    out.append(line)
    return "\r\n".join(out) + "\r\n"


def _header_charset(rng: random.Random, charset: str) -> Charset:
    cs = Charset(charset)
    if charset == "utf-8" and rng.random() < 0.5:
        cs.header_encoding = BASE64
    return cs


def _attachment(rng: random.Random, finnish: bool, when: datetime) -> tuple[bytes, str, str, str]:
    """Return (data, maintype, subtype, filename); the filename tells the kind."""
    kind = rng.choices(_ATTACH_KINDS, weights=_ATTACH_WEIGHTS)[0]
    size = int(10 * 1024 + 190 * 1024 * rng.random() ** 2.5)
    names = _ATTACH_NAMES[kind][1 if finnish and rng.random() < 0.8 else 0]
    filename = rng.choice(names)
    maintype, subtype = _ATTACH_TYPES[kind]
    if kind == "log":
        parts: list[str] = []
        total = 0
        day = f"{when:%Y-%m-%d}"
        ms = max(0, (when.hour - 2) * 3_600_000 + when.minute * 60_000)
        while total < size:
            x = rng.getrandbits(32)
            ms += 5 + (x & 0xFFF)
            level = _LOG_LEVELS[(x >> 12) % len(_LOG_LEVELS)]
            msg = _LOG_MESSAGES[(x >> 18) % len(_LOG_MESSAGES)].format(n=(x >> 22) % 1000)
            sec, milli = divmod(ms % 86_400_000, 1000)
            line = (
                f"{day} {sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d},{milli:03d} "
                f"{level:<5} [worker-{(x >> 15) & 7}] {msg}\r\n"
            )
            parts.append(line)
            total += len(line)
        data = "".join(parts).encode("ascii")[:size]
    else:
        head = {
            "pdf": b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n",
            "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
        }[kind]
        tail = b"\n%%EOF\n" if kind == "pdf" else b""
        data = head + rng.randbytes(max(0, size - len(head) - len(tail))) + tail
    return data, maintype, subtype, filename


def _attached_sentence(rng: random.Random, filename: str, finnish: bool) -> str:
    ext = filename.rpartition(".")[2].lower()
    kind = {"pdf": "pdf", "png": "png", "zip": "zip"}.get(ext, "log")
    return rng.choice(_ATTACHED[kind][1 if finnish else 0])


def _latin1_ok(*texts: str) -> bool:
    try:
        for t in texts:
            t.encode("iso-8859-1")
    except UnicodeEncodeError:
        return False
    return True


def _encode_body(data: bytes, cte: str) -> bytes:
    """Transfer-encode ``data`` (CRLF line endings) for a MIME body."""
    if cte == "base64":
        enc = base64.b64encode(data)
        return b"".join(enc[i : i + 76] + b"\r\n" for i in range(0, len(enc), 76))
    if cte == "quoted-printable":
        return binascii.b2a_qp(data, istext=True)  # keeps CRLF, soft breaks at 76
    return data  # 7bit / 8bit


def _text_part(text: str, subtype: str, charset: str, cte: str) -> tuple[str, bytes]:
    data = text.replace("\n", "\r\n").encode(charset)
    if cte == "8bit" and data.isascii():
        cte = "7bit"
    headers = (
        f'Content-Type: text/{subtype}; charset="{charset}"\r\nContent-Transfer-Encoding: {cte}\r\n'
    )
    return headers, _encode_body(data, cte)


def _param(name: str, value: str, cs: str) -> str:
    """One MIME parameter; RFC 2231 (with continuations if long) for non-ASCII."""
    if value.isascii():
        return f'{name}="{value}"'
    enc = quote(value.encode(cs), safe="")
    if len(enc) + len(cs) + len(name) < 60:
        return f"{name}*={cs}''{enc}"
    chunks: list[str] = []
    while enc:
        cut = min(50, len(enc))
        while 0 < cut < len(enc) and "%" in enc[cut - 2 : cut]:
            cut -= 1  # never split a %XX escape
        chunks.append(enc[:cut])
        enc = enc[cut:]
    return ";\r\n\t".join(
        f"{name}*{i}*={cs}''{c}" if i == 0 else f"{name}*{i}*={c}" for i, c in enumerate(chunks)
    )


def _attachment_part(
    rng: random.Random, attachment: tuple[bytes, str, str, str], outlook: bool
) -> tuple[str, bytes]:
    data, maintype, subtype, filename = attachment
    cs = "iso-8859-1" if _latin1_ok(filename) and rng.random() < 0.3 else "utf-8"
    size = f";\r\n\tsize={len(data)}" if outlook else ""
    headers = (
        f"Content-Type: {maintype}/{subtype};\r\n\t{_param('name', filename, cs)}\r\n"
        f"Content-Disposition: attachment;\r\n\t{_param('filename', filename, cs)}{size}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
    )
    return headers, _encode_body(data, "base64")


def _multipart(
    rng: random.Random, subtype: str, parts: Sequence[tuple[str, bytes]], preamble: bool
) -> tuple[str, bytes]:
    boundary = f"----=_Part_{_hex(rng, 8)}_{_hex(rng, 16)}"
    delim = f"--{boundary}\r\n".encode("ascii")
    chunks: list[bytes] = []
    if preamble:
        chunks.append(b"This is a multi-part message in MIME format.\r\n\r\n")
    for headers, body in parts:
        chunks += [delim, headers.encode("ascii"), b"\r\n", body]
        if not body.endswith(b"\r\n"):
            chunks.append(b"\r\n")
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    return f'Content-Type: multipart/{subtype};\r\n\tboundary="{boundary}"\r\n', b"".join(chunks)


def _build_entity(
    rng: random.Random,
    body: _Body,
    text: str,
    person: _Person,
    attachment: tuple[bytes, str, str, str] | None,
) -> bytes:
    """Serialise the MIME part of the message (MIME-Version, Content-*, body)."""
    charset = "iso-8859-1" if rng.random() < 0.4 else "utf-8"
    cte = rng.choices(("quoted-printable", "base64", "8bit"), weights=(45, 30, 25))[0]
    r = rng.random()
    shape = "html" if r < _P_HTML_ONLY else "alt" if r < _P_HTML_ONLY + _P_ALTERNATIVE else "plain"
    outlook = person.client == "outlook"
    html_text = _render_html(body, charset, outlook, person.finnish) if shape != "plain" else ""
    if charset == "iso-8859-1" and not _latin1_ok(text, html_text):
        charset = "utf-8"
        if html_text:
            html_text = _render_html(body, charset, outlook, person.finnish)
    preamble = person.client in ("outlook", "thunderbird")
    if shape == "html":
        part = _text_part(html_text, "html", charset, cte)
    elif shape == "alt":
        html_cte = cte if rng.random() < 0.5 else "quoted-printable"
        part = _multipart(
            rng,
            "alternative",
            [
                _text_part(text, "plain", charset, cte),
                _text_part(html_text, "html", charset, html_cte),
            ],
            preamble and attachment is None,
        )
    else:
        part = _text_part(text, "plain", charset, cte)
    if attachment is not None:
        part = _multipart(
            rng, "mixed", [part, _attachment_part(rng, attachment, outlook)], preamble
        )
    headers, payload = part
    return b"".join((b"MIME-Version: 1.0\r\n", headers.encode("ascii"), b"\r\n", payload))


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def generate(
    n: int = 2000, *, seed: int = 1, helpdesk: str = "help@example.com", senders: int = 300
) -> list[CorpusMessage]:
    """Generate ``n`` messages in arrival order; same arguments -> same bytes."""
    rng = random.Random(seed)
    hd_domain = helpdesk.rpartition("@")[2] or "example.com"
    ack_domain = f"helpdesk.{hd_domain}"
    people = _make_people(rng, senders)
    by_domain: dict[str, list[_Person]] = {}
    for p in people:
        by_domain.setdefault(p.domain, []).append(p)
    clock = _Clock(rng)

    threads: list[_Thread] = []
    replyable: list[_Thread] = []  # threads whose original has a Message-ID
    with_replies: list[_Thread] = []
    used_ids: set[str] = set()
    out: list[CorpusMessage] = []

    def pick(pool: list[_Thread]) -> _Thread:
        back = min(int(rng.expovariate(1 / 30)), len(pool) - 1)
        return pool[len(pool) - 1 - back]

    def unique_id(person: _Person, when: datetime) -> str:
        mid = _message_id(rng, person, when, len(out))
        while mid in used_ids:
            mid = _message_id(rng, person, when, len(out))
        used_ids.add(mid)
        return mid

    def signature(p: _Person) -> list[str]:
        return [f"{p.first} {p.last}", p.title, p.company, p.phone]

    for _ in range(n):
        now = clock.advance()
        is_reply = bool(replyable) and rng.random() < _P_REPLY
        has_attachment = rng.random() < _P_ATTACH
        attachment: tuple[bytes, str, str, str] | None = None

        if not is_reply:
            person = rng.choice(people)
            topic = rng.choice(_TOPICS)
            fi = person.finnish
            base_subject = rng.choice(topic[1] if fi else topic[0])
            subject = base_subject + rng.choice(_FI_SUFFIX if fi else _EN_SUFFIX)
            thread_subject = subject
            details = rng.sample(topic[3] if fi else topic[2], k=rng.randint(2, 4))
            paragraphs = [" ".join(details[:2]), *details[2:]]
            if rng.random() < 0.5:
                paragraphs.append(rng.choice(_FI_EXTRA if fi else _EN_EXTRA))
            if has_attachment:
                attachment = _attachment(rng, fi, now)
                paragraphs.append(_attached_sentence(rng, attachment[3], fi))
            body = _Body(
                greeting=rng.choice(_FI_GREETINGS if fi else _EN_GREETINGS),
                paragraphs=paragraphs,
                closing=rng.choice(_FI_CLOSINGS if fi else _EN_CLOSINGS),
                first=person.first,
                signature=signature(person),
            )
            mid = "" if rng.random() < _P_NO_MSGID else unique_id(person, now)
            in_reply_to = ""
            references: list[str] = []
            thread_index = len(threads)
        else:
            to_reply = bool(with_replies) and rng.random() < _P_REPLY_TO_REPLY
            thread = pick(with_replies if to_reply else replyable)
            req = thread.requester
            person = req
            colleague = False
            if rng.random() < _P_COLLEAGUE:
                mates = [p for p in by_domain[req.domain] if p is not req]
                if mates:
                    person = rng.choice(mates)
                    colleague = True
            fi = req.finnish
            if to_reply:
                prev = thread.replies[-1] if rng.random() < 0.7 else rng.choice(thread.replies)
                in_reply_to = prev.message_id
                references = [thread.orig_id, thread.ack_id, prev.message_id]
            else:
                prev = thread.ack
                in_reply_to = thread.ack_id
                references = [thread.orig_id, thread.ack_id]
            if person.client == "outlook" and person.lang == "sv":
                prefix = "SV:"
            elif person.client == "outlook" and person.finnish:
                prefix = "VS:"
            elif person.client == "outlook":
                prefix = "RE:"
            else:
                prefix = "Re:"
            thread_subject = thread.subject
            subject = f"{prefix} {thread_subject}"
            if to_reply and not prev.subject.startswith(prefix) and rng.random() < 0.4:
                subject = f"{prefix} {prev.subject}"
            paragraphs = []
            if colleague:
                name = f"{req.first} {req.last}"
                paragraphs.append((_FI_COLLEAGUE if fi else _EN_COLLEAGUE).format(name=name))
            paragraphs.extend(rng.sample(_FI_REPLY if fi else _EN_REPLY, k=rng.randint(1, 2)))
            if has_attachment:
                attachment = _attachment(rng, fi, now)
                paragraphs.append(_attached_sentence(rng, attachment[3], fi))
            quoted_lines = prev.text.rstrip("\n").split("\n")[:60]
            body = _Body(
                greeting=rng.choice(_FI_GREETINGS if fi else _EN_GREETINGS),
                paragraphs=paragraphs,
                closing=rng.choice(_FI_CLOSINGS if fi else _EN_CLOSINGS),
                first=person.first,
                signature=signature(person),
                quote_header=_quote_header(
                    rng, person, fi, prev.person_display, prev.address, prev.date
                ),
                quoted="\n".join(quoted_lines),
            )
            mid = unique_id(person, now)
            thread_index = thread.index

        text = _render_text(body)
        entity = _build_entity(rng, body, text, person, attachment)

        name_cs = _header_charset(rng, person.name_charset)
        from_value = formataddr((person.display, person.address), charset=name_cs)
        if len(from_value) > 72:  # fold before the address, as Outlook does
            name_part, _, addr_part = from_value.rpartition(" ")
            from_value = f"{name_part}\r\n {addr_part}"
        subj_cs = "us-ascii" if subject.isascii() else person.name_charset
        subj_value = Header(
            subject,
            _header_charset(rng, subj_cs) if subj_cs != "us-ascii" else subj_cs,
            header_name="Subject",
        ).encode(linesep="\r\n")
        to_value = rng.choice(
            (helpdesk, f"IT Help Desk <{helpdesk}>", f"IT-tuki <{helpdesk}>")
            if fi
            else (helpdesk, f"IT Help Desk <{helpdesk}>")
        )
        headers = [
            _received(rng, person, now, hd_domain, helpdesk),
            f"Date: {format_datetime(now.astimezone(person.tz))}\r\n",
            f"From: {from_value}\r\n",
            f"To: {to_value}\r\n",
            f"Subject: {subj_value}\r\n",
        ]
        if mid:
            headers.append(f"Message-ID: {mid}\r\n")
        if in_reply_to:
            headers.append(f"In-Reply-To: {in_reply_to}\r\n")
            headers.append(_fold_ids("References", references))
        if person.client == "outlook" and thread_subject.isascii() and rng.random() < 0.6:
            headers.append(f"Thread-Topic: {thread_subject}\r\n")
        headers.append(_mailer_header(rng, person.client))
        if person.finnish and rng.random() < 0.3:
            headers.append("Content-Language: fi-FI\r\n")
        raw = "".join(headers).encode("ascii") + entity

        sent = _Sent(
            message_id=mid,
            subject=subject,
            person_display=person.display,
            address=person.address,
            date=now,
            text=text,
        )
        if not is_reply:
            ack_id = f"<ack-{thread_index:06d}-{_hex(rng, 12)}@{ack_domain}>"
            ack_date = now + timedelta(seconds=rng.randint(2, 15))
            ack_text = (_FI_ACK if fi else _EN_ACK).format(first=person.first, subject=subject)
            ack = _Sent(
                message_id=ack_id,
                subject=subject,
                person_display="IT-tuki" if fi else "IT Help Desk",
                address=helpdesk,
                date=ack_date,
                text="\n".join(line for par in ack_text.split("\n") for line in _wrap(par)),
            )
            thread = _Thread(
                index=thread_index,
                requester=person,
                subject=subject,
                orig_id=mid,
                ack_id=ack_id,
                ack=ack,
            )
            threads.append(thread)
            if mid:
                replyable.append(thread)
        else:
            if not thread.replies:
                with_replies.append(thread)
            thread.replies.append(sent)

        out.append(
            CorpusMessage(
                raw=raw,
                thread=thread_index,
                is_reply=is_reply,
                sender=person.address,
                message_id=mid,
            )
        )
    return out


def _arrival(msg: CorpusMessage) -> datetime:
    """The message's Date header (the generator's arrival clock)."""
    raw = msg.raw
    start = 0 if raw.startswith(b"Date: ") else raw.find(b"\r\nDate: ") + 2
    if start >= 2 or raw.startswith(b"Date: "):
        end = raw.find(b"\r\n", start)
        try:
            return parsedate_to_datetime(raw[start + 6 : end].decode("ascii"))
        except (ValueError, TypeError, UnicodeDecodeError):
            pass
    return _START


def _mbox_from_line(msg: CorpusMessage) -> bytes:
    stamp = _arrival(msg).astimezone(UTC).strftime("%a %b %d %H:%M:%S %Y")
    return f"From {msg.sender or 'MAILER-DAEMON'} {stamp}\n".encode("ascii")


def write_mbox(messages: Sequence[CorpusMessage], path: Path) -> None:
    """Write an mboxrd file (``>*From `` lines get one more ``>``), LF line endings."""
    path = Path(path)
    with path.open("wb") as fh:
        for msg in messages:
            fh.write(_mbox_from_line(msg))
            body = msg.raw.replace(b"\r\n", b"\n")
            lines = body.split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            for line in lines:
                if line.lstrip(b">").startswith(b"From "):
                    fh.write(b">")
                fh.write(line)
                fh.write(b"\n")
            fh.write(b"\n")


def write_maildir(messages: Sequence[CorpusMessage], path: Path) -> None:
    """Write a Maildir; ``new/`` file names sort lexically in arrival order."""
    path = Path(path)
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(messages))))
    for i, msg in enumerate(messages):
        epoch = int(_arrival(msg).timestamp())
        name = f"{epoch:010d}.M{i:0{width}d}.corpus"
        tmp = path / "tmp" / name
        tmp.write_bytes(msg.raw)
        os.replace(tmp, path / "new" / name)


def _summary(messages: Sequence[CorpusMessage]) -> str:
    replies = sum(m.is_reply for m in messages)
    threads = len({m.thread for m in messages})
    senders = len({m.sender for m in messages if not m.is_reply})
    no_id = sum(1 for m in messages if not m.message_id)
    size = sum(len(m.raw) for m in messages)
    return (
        f"{len(messages)} messages: {len(messages) - replies} new, {replies} replies, "
        f"{threads} threads, {senders} requesters, {no_id} without Message-ID, "
        f"{size / 1_048_576:.1f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate a deterministic help-desk mail corpus.")
    parser.add_argument("--n", type=int, default=2000, help="number of messages (default 2000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--helpdesk", default="help@example.com", help="help desk address")
    parser.add_argument("--senders", type=int, default=300, help="number of distinct requesters")
    dest = parser.add_mutually_exclusive_group()
    dest.add_argument("--mbox", type=Path, help="write an mboxrd file")
    dest.add_argument("--maildir", type=Path, help="write a Maildir directory")
    args = parser.parse_args(argv)
    if args.n < 0:
        parser.error("--n must be >= 0")
    start = time.perf_counter()
    messages = generate(args.n, seed=args.seed, helpdesk=args.helpdesk, senders=args.senders)
    elapsed = time.perf_counter() - start
    target = ""
    if args.mbox is not None:
        write_mbox(messages, args.mbox)
        target = f" -> {args.mbox}"
    elif args.maildir is not None:
        write_maildir(messages, args.maildir)
        target = f" -> {args.maildir}"
    sys.stdout.write(f"{_summary(messages)}, generated in {elapsed:.2f}s{target}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
